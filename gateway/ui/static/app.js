// The dashboard: a hash router over pages that call the JSON API with the tab's token.
import { ApiError, forget, setToken, signOut, token, whoami } from "./api.js";
import { fill, h, link, notice } from "./dom.js";
import * as deliveries from "./deliveries.js";
import * as dlq from "./dlq.js";
import * as overview from "./overview.js";
import * as tasks from "./tasks.js";
import * as task from "./task.js";
import * as webhooks from "./webhooks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

// [pattern, page, which tokens see it in the menu]
const ROUTES = [
  [/^\/$/, overview.render, { menu: "Overview", href: "/" }],
  [/^\/tasks$/, tasks.render, { menu: "Tasks", href: "/tasks" }],
  [/^\/tasks\/([^/]+)$/, task.render],
  [/^\/dlq$/, dlq.render, { menu: "Dead letters", href: "/dlq", admin: true }],
  [/^\/dlq\/([^/]+)$/, dlq.render],
  [/^\/webhooks$/, webhooks.render, { menu: "Webhooks", href: "/webhooks", producer: true }],
  [/^\/webhooks\/([^/]+)$/, webhooks.renderEndpoint],
  [/^\/deliveries$/, deliveries.render, { menu: "Deliveries", href: "/deliveries", producer: true }],
  [/^\/deliveries\/([^/]+)$/, deliveries.renderOne],
];

let generation = 0;

/** The route in the hash: "#/tasks/ID?x=1" → {path: "/tasks/ID", params: URLSearchParams}. */
function current() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, q = ""] = raw.split("?", 2);
  return { path: path || "/", params: new URLSearchParams(q) };
}

function showNav(me, path) {
  const visible = ROUTES.filter(([, , m]) => m && (!m.admin || me.admin) && (!m.producer || me.producer || me.admin));
  fill(
    nav,
    visible.map(([, , m]) => {
      const active = m.href === "/" ? path === "/" : path.startsWith(m.href);
      return link(m.href, m.menu, { class: active ? "active" : null });
    }),
  );
  const roles = [me.producer && "producer", me.worker && "worker", me.superAdmin ? "super-admin" : me.admin && "admin"];
  fill(
    who,
    h("span", { "data-testid": "identity" }, `${me.subject} · tenant ${me.tenantId} · ${roles.filter(Boolean).join(", ")}`),
    h("button", { type: "button", class: "secondary", onclick: () => { signOut(); route(); } }, "Sign out"),
  );
}

function signInPage(message) {
  fill(nav);
  fill(who);
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true, "aria-label": "bearer token" });
  const out = h("div", {}, message ? notice(message, "error") : null);
  // The input has no name and the page allows no form submission (CSP form-action 'none'):
  // the token can only leave through the script below, in an Authorization header.
  const form = h(
    "form",
    { class: "card signin", onsubmit: async (e) => {
      e.preventDefault();
      setToken(input.value.trim());
      try {
        await whoami();
        if (current().path === "/signin") location.hash = "#/";
        else route();
      } catch (err) {
        signOut();
        fill(out, notice(err.status === 401 ? `Sign-in refused: ${err.message}` : err.message, "error"));
      }
    } },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste a codeQ bearer token (a static token or a JWT). It is kept in this tab only and sent only to this server's API."),
    h("label", {}, "Token", input),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")),
    out,
  );
  fill(main, form);
  input.focus();
}

/** The page shown for an unknown route, or an id this token may not see. */
export function notFound(what = "This page") {
  fill(
    main,
    h(
      "div",
      { class: "notfound", "data-testid": "not-found" },
      h("h1", {}, "Not found"),
      h("p", { class: "muted" }, `${what} does not exist, or is not visible to this token.`),
      link("/", "Back to the overview"),
    ),
  );
}

async function route() {
  const mine = ++generation;
  const { path, params } = current();
  if (!token()) return signInPage();
  let me;
  try {
    me = await whoami();
  } catch (err) {
    signOut();
    return signInPage(err instanceof ApiError && err.status === 401 ? `Signed out: ${err.message}` : err.message);
  }
  if (path === "/signin") {
    location.hash = "#/";
    return;
  }
  showNav(me, path);
  const ctx = { me, params, alive: () => mine === generation, notFound };
  for (const [pattern, page] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    fill(main, h("p", { class: "muted" }, "Loading…"));
    try {
      await page(main, ctx, ...m.slice(1).map(decodeURIComponent));
    } catch (err) {
      if (!ctx.alive()) return;
      if (err instanceof ApiError && err.status === 404) return notFound();
      if (err instanceof ApiError && err.status === 401) {
        // A route of the other side (a worker token on a producer route) is 401 too: sign
        // out only when the token itself is no longer accepted.
        forget();
        try {
          await whoami();
        } catch {
          signOut();
          return signInPage(`Signed out: ${err.message}`);
        }
      }
      fill(main, notice(err.message, "error"));
    }
    return;
  }
  notFound();
}

window.addEventListener("hashchange", route);
route();
