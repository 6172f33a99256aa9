// Building the page: every value from the API goes in as text (textContent), never as HTML.

/** An element: h("td", {class: "num"}, child, "text", [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace the content of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

/** A link inside the dashboard (hash routes). */
export const link = (route, text, attrs = {}) => h("a", { href: `#${route}`, ...attrs }, text);

/** A link to a URL given by the API: only http(s) is clickable, anything else is text. */
export function outLink(url) {
  try {
    const u = new URL(url);
    if (u.protocol === "http:" || u.protocol === "https:") {
      return h("a", { href: u.href, rel: "noopener noreferrer", target: "_blank" }, url);
    }
  } catch {
    /* not a URL: shown as text */
  }
  return h("span", { class: "mono" }, url);
}

export const badge = (status) => h("span", { class: `badge s-${status}` }, status ?? "—");

export function notice(text, kind = "") {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** A table: columns [{title, num?}] and rows of cells (nodes or text). */
export function table(columns, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)))),
    h(
      "tbody",
      {},
      rows.map((cells) =>
        h("tr", {}, cells.map((cell, i) => h("td", { class: columns[i]?.num ? "num" : null }, cell))),
      ),
    ),
  );
}

/** Pretty JSON of a value, or of JSON text (a task's payload is JSON text). */
export function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

/** An RFC 3339 time as local time, with the UTC text as its tooltip. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

export function fields(pairs) {
  return h(
    "dl",
    { class: "fields" },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

/** A button whose click runs `action`, disabled while it runs; errors show in `out`. */
export function actionButton(text, action, { out, kind = "", attrs = {} } = {}) {
  const button = h("button", { type: "button", class: kind, ...attrs }, text);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const message = await action();
      if (out && message) fill(out, notice(message, "ok"));
    } catch (err) {
      if (out) fill(out, notice(err.message, "error"));
      else throw err;
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Small bars of recent values (heights scaled to the largest). */
export function spark(values) {
  const top = Math.max(1, ...values);
  const el = h("span", { class: "spark", "aria-hidden": "true" });
  for (const v of values) {
    const bar = h("span", { title: String(v) });
    bar.style.height = `${Math.max(1, Math.round((22 * v) / top))}px`;
    el.append(bar);
  }
  return el;
}

/** Show `route` ("/tasks?x=1"): also when it is already the current one (shown afresh). */
export function go(route) {
  if (location.hash === `#${route}`) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = `#${route}`;
}
