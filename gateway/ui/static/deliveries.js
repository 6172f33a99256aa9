// Deliveries: each webhook message with its attempts (request and response), from the tenant's
// delivery listing (GET /deliveries: filtered by status, endpoint and event type in the store,
// a page at a time), and "retry now" (POST /deliveries/{id}/retry).
import { api, enc, query } from "./api.js";
import { actionButton, badge, fields, fill, go, h, link, notice, outLink, table, when } from "./dom.js";

const STATUSES = ["pending", "retrying", "succeeded", "dead", "gone"];

function retryButton(d, out) {
  return actionButton(
    "Retry now",
    async () => {
      const r = await api("POST", `/deliveries/${enc(d.id)}/retry`);
      return r.replayed ? `Replayed ${d.id}: it is attempted again now.` : `Not replayed: ${d.id}.`;
    },
    { out, kind: "secondary", attrs: { "data-action": "retry" } },
  );
}

/** What the last attempt sent: its headers and (on a delivery's own page) its body. */
function sent(request) {
  if (!request) return null;
  const headers = Object.entries(request.headers ?? {});
  return h(
    "details",
    { "data-testid": "request" },
    h("summary", {}, `Request: ${request.method ?? "POST"} · ${headers.length} headers · ${request.bodyBytes ?? 0} bytes`),
    headers.length ? table([{ title: "header" }, { title: "value" }], headers.map(([k, v]) => [h("code", {}, k), h("code", {}, String(v))])) : null,
    request.body !== undefined && request.body !== null
      ? [h("pre", {}, request.body), request.bodyTruncated ? h("p", { class: "muted" }, "The body is cut after its first 64 KiB.") : null]
      : null,
  );
}

/** One delivery: what was sent, each attempt's answer, and retry. */
export function deliveryCard(d, ctx) {
  const out = h("div");
  const attempts = d.attemptLog ?? [];
  return h(
    "div",
    { class: "card", "data-testid": "delivery", "data-delivery": d.id },
    h("div", { class: "actions" }, link(`/deliveries/${enc(d.id)}`, d.id, { class: "mono" }), badge(d.status), retryButton(d, out)),
    out,
    fields([
      ["request", [h("code", {}, "POST "), outLink(d.url)]],
      ["event", d.eventType],
      ["kind", d.kind],
      ["task", d.taskId ? link(`/tasks/${enc(d.taskId)}`, d.taskId, { class: "mono" }) : null],
      ["endpoint", d.endpointId ? link(`/webhooks/${enc(d.endpointId)}`, d.endpointId, { class: "mono" }) : null],
      ["attempts", `${d.attempts} of ${d.maxAttempts}`],
      ["created", when(d.createdAt)],
      ["next attempt", d.nextAttemptAt ? when(d.nextAttemptAt) : null],
      ["dead since", d.deadAt ? when(d.deadAt) : null],
    ]),
    sent(d.request),
    attempts.length
      ? table(
          [{ title: "attempt at" }, { title: "response" }, { title: "latency", num: true }, { title: "error" }, { title: "response body" }],
          attempts.map((a) => [
            when(a.at),
            a.statusCode ?? "—",
            `${Math.round(a.latencyMs)} ms`,
            a.error ?? "",
            a.response ? h("pre", {}, a.response) : "",
          ]),
        )
      : h("p", { class: "muted" }, ctx && d.status === "pending" ? "Not attempted yet." : "No attempt recorded."),
  );
}

export async function renderOne(main, ctx, id) {
  const d = await api("GET", `/deliveries/${enc(id)}`); // 404: the not-found page
  fill(main, h("h1", {}, "Delivery"), deliveryCard(d, ctx));
}

const PAGE = 100;

export async function render(main, ctx) {
  const { me, params } = ctx;
  const source = params.get("endpoint") ?? "";
  const status = params.get("status") ?? "";
  const eventType = params.get("eventType") ?? "";
  const filters = { endpointId: source || null, status: status || null, eventType: eventType || null };
  const [endpoints, catalog, first] = await Promise.all([
    me.producer ? api("GET", "/webhooks/endpoints").then((r) => r.endpoints) : [],
    api("GET", "/webhooks/event-types"),
    api("GET", `/deliveries${query({ ...filters, limit: PAGE })}`),
  ]);
  if (!ctx.alive()) return;
  const shown = first.deliveries;
  let cursor = first.nextCursor;

  const select = (name, current, options) =>
    h("select", { name }, options.map(([value, text]) => h("option", { value, selected: value === current }, text)));
  const sources = [["", "every endpoint"], ...endpoints.map((e) => [e.id, e.description || e.url])];
  const types = catalog.eventTypes.map((t) => t.type);
  const form = h(
    "form",
    { class: "filters" },
    h("label", {}, "Endpoint", select("endpoint", source, sources)),
    h("label", {}, "Status", select("status", status, [["", "any"], ...STATUSES.map((s) => [s, s])])),
    h("label", {}, "Event type", select("eventType", eventType, [["", "any"], ...types.map((t) => [t, t])])),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    go(`/deliveries${query(data)}`);
  });
  const lookup = h("form", { class: "filters" }, h("label", {}, "Delivery id", h("input", { name: "id", size: 40 })), h("button", { type: "submit", class: "secondary" }, "Open"));
  lookup.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = new FormData(lookup).get("id").trim();
    if (id) go(`/deliveries/${enc(id)}`);
  });
  const out = h("div", { "data-testid": "action-result" });
  const row = (d) => {
    const last = d.attemptLog?.at(-1);
    return [
      link(`/deliveries/${enc(d.id)}`, d.id, { class: "mono" }),
      d.eventType,
      badge(d.status),
      `${d.attempts}/${d.maxAttempts}`,
      last ? (last.statusCode ?? last.error ?? "—") : "—",
      when(d.createdAt),
      retryButton(d, out),
    ];
  };
  const columns = [{ title: "id" }, { title: "event" }, { title: "status" }, { title: "attempts", num: true }, { title: "last answer" }, { title: "created" }, { title: "" }];
  const list = table(columns, shown.map(row), { "data-testid": "deliveries" });
  const none = shown.length || cursor ? null : notice("No delivery matches these filters.");
  const more = h("button", { type: "button", class: "secondary", hidden: !cursor }, "Load more");
  more.addEventListener("click", async () => {
    more.disabled = true;
    const page = await api("GET", `/deliveries${query({ ...filters, limit: PAGE, cursor })}`);
    const body = list.querySelector("tbody");
    for (const d of page.deliveries) body.append(h("tr", {}, row(d).map((cell) => h("td", {}, cell))));
    cursor = page.nextCursor;
    more.hidden = !cursor;
    more.disabled = false;
  });
  fill(main, h("h1", {}, "Deliveries"), form, lookup, out, list, none, more);
}
