// Deliveries: each webhook message with its attempts (request and response), filtered by
// status, endpoint and event type, and "retry now" (POST /deliveries/{id}/retry).
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

/** The deliveries the token can list: one endpoint's, every endpoint's, or the dead ones. */
async function gather(me, source) {
  if (source === "dead") return (await api("GET", "/admin/deliveries/dlq?limit=500")).deliveries;
  const ids = source ? [source] : (await api("GET", "/webhooks/endpoints")).endpoints.map((e) => e.id);
  const lists = await Promise.all(ids.map((id) => api("GET", `/webhooks/endpoints/${enc(id)}/deliveries`)));
  return lists.flatMap((l) => l.deliveries).sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
}

export async function render(main, ctx) {
  const { me, params } = ctx;
  const source = params.get("endpoint") ?? (me.producer ? "" : "dead");
  const endpoints = me.producer ? (await api("GET", "/webhooks/endpoints")).endpoints : [];
  const all = await gather(me, source);
  const status = params.get("status") ?? "";
  const eventType = params.get("eventType") ?? "";
  const shown = all.filter((d) => (!status || d.status === status) && (!eventType || d.eventType === eventType));

  const select = (name, current, options) =>
    h("select", { name }, options.map(([value, text]) => h("option", { value, selected: value === current }, text)));
  const sources = [
    ...(me.producer ? [["", "every endpoint"], ...endpoints.map((e) => [e.id, e.description || e.url])] : []),
    ...(me.admin ? [["dead", "dead letters (admin)"]] : []),
  ];
  const types = [...new Set(all.map((d) => d.eventType))].sort();
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
    go(`/deliveries${query({ ...data, endpoint: data.endpoint || (me.producer ? "" : "dead") })}`);
  });
  const lookup = h("form", { class: "filters" }, h("label", {}, "Delivery id", h("input", { name: "id", size: 40 })), h("button", { type: "submit", class: "secondary" }, "Open"));
  lookup.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = new FormData(lookup).get("id").trim();
    if (id) go(`/deliveries/${enc(id)}`);
  });
  const out = h("div", { "data-testid": "action-result" });
  fill(
    main,
    h("h1", {}, "Deliveries"),
    form,
    lookup,
    out,
    shown.length
      ? table(
          [{ title: "id" }, { title: "event" }, { title: "status" }, { title: "attempts", num: true }, { title: "last answer" }, { title: "created" }, { title: "" }],
          shown.map((d) => {
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
          }),
          { "data-testid": "deliveries" },
        )
      : notice(all.length ? "No delivery matches these filters." : "No deliveries yet."),
  );
}
