// One task: its fields, payload, result and artifacts, its event history, its webhook
// deliveries, and the actions this token may take (requeue from the dead-letter queue: admin;
// cancel a pending task: producer).
import { ApiError, api, enc } from "./api.js";
import { actionButton, badge, fields, fill, h, link, notice, outLink, pretty, when } from "./dom.js";
import { deliveryCard } from "./deliveries.js";

/** GET that answers null for a 404 (no result yet; a task without deliveries). */
async function optional(path) {
  try {
    return await api("GET", path);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

const DETAILS = [
  ["workerId", "worker"],
  ["attempt", "attempt"],
  ["reason", "reason"],
  ["error", "error"],
  ["delayMs", "delay ms"],
];

/** The task's own event history (GET /tasks/{id}/history), oldest first, with the webhooks
 * its events caused placed among them. */
function history(events, deliveries) {
  const rows = events.map((e) => {
    const said = DETAILS.filter(([k]) => e[k] !== undefined && e[k] !== null).map(([k, label]) => `${label} ${e[k]}`);
    if (e.runAt) said.push(`runs at ${new Date(e.runAt).toLocaleString()}`);
    return [e.at, [h("strong", {}, e.type), said.length ? ` — ${said.join(", ")}` : ""]];
  });
  for (const d of deliveries) rows.push([d.createdAt, `${d.eventType} → webhook ${d.status}`]);
  return rows
    .sort(([a], [b]) => Date.parse(a) - Date.parse(b))
    .map(([at, what]) => h("li", {}, when(at), " — ", what));
}

export async function render(main, ctx, id) {
  const t = await api("GET", `/tasks/${enc(id)}`); // 404: the not-found page
  const [withResult, deliveryList, past] = await Promise.all([
    optional(`/tasks/${enc(id)}/result`),
    optional(`/tasks/${enc(id)}/deliveries`),
    optional(`/tasks/${enc(id)}/history`),
  ]);
  if (!ctx.alive()) return;
  const result = withResult?.result ?? null;
  const deliveries = deliveryList?.deliveries ?? [];
  const dead = t.lastKnownLocation === "DLQ_SET";
  const out = h("div", { "data-testid": "action-result" });
  const actions = [];
  if (dead && ctx.me.admin) {
    actions.push(
      actionButton(
        "Requeue from dead letters",
        async () => {
          const r = await api("POST", `/admin/queues/${enc(t.command)}/dlq/requeue`, { ids: [t.id] });
          setTimeout(() => ctx.alive() && render(main, ctx, id), 600);
          return r.requeued ? "Requeued: the task is ready again." : "Not requeued: the task is no longer dead.";
        },
        { out, attrs: { "data-admin": "requeue" } },
      ),
    );
  }
  if (t.status === "PENDING" && ctx.me.producer) {
    actions.push(
      actionButton(
        "Cancel task",
        async () => {
          const r = await api("POST", `/tasks/${enc(t.id)}/cancel`, { reason: "cancelled from the dashboard" });
          setTimeout(() => ctx.alive() && render(main, ctx, id), 600);
          return `Cancelled: the task is ${r.status} and will not run.`;
        },
        { out, attrs: { "data-producer": "cancel" } },
      ),
    );
  }
  fill(
    main,
    h("h1", {}, "Task ", h("span", { class: "mono" }, t.id), " ", badge(dead ? "DEAD" : t.status)),
    h("div", { class: "actions" }, actions, link(`/tasks?command=${enc(t.command)}`, `all ${t.command} tasks`)),
    out,
    h(
      "div",
      { class: "card" },
      fields([
        ["command", t.command],
        ["status", t.status],
        ["where", t.lastKnownLocation],
        ["tenant", t.tenantId],
        ["priority", t.priority],
        ["attempts", `${t.attempts} of ${t.maxAttempts}`],
        ["error", t.error],
        ["worker", t.workerId],
        ["lease until", t.leaseUntil ? when(t.leaseUntil) : null],
        ["run at", t.runAt ? when(t.runAt) : null],
        ["idempotency key", t.idempotencyKey],
        ["webhook", t.webhook ? outLink(t.webhook) : null],
        ["trace", t.traceParent],
        ["created", when(t.createdAt)],
        ["updated", when(t.updatedAt)],
      ]),
    ),
    h("h2", {}, "Payload"),
    h("pre", { "data-testid": "payload" }, pretty(t.payload ?? "")),
    h("h2", {}, "Result"),
    result
      ? [
          fields([
            ["status", badge(result.status)],
            ["error", result.error],
            ["completed", when(result.completedAt)],
          ]),
          result.result !== undefined && result.result !== null ? h("pre", {}, pretty(result.result)) : null,
          result.artifacts?.length
            ? [
                h("h2", {}, "Artifacts"),
                h(
                  "ul",
                  {},
                  result.artifacts.map((a) =>
                    h("li", {}, h("strong", {}, a.name), " ", a.url ? outLink(a.url) : "", a.contentType ? ` · ${a.contentType}` : "", a.size !== undefined ? ` · ${a.size} bytes` : ""),
                  ),
                ),
              ]
            : null,
        ]
      : h("p", { class: "muted" }, dead ? "Dead-lettered: no result (the error is above)." : "No result yet."),
    h("h2", {}, "History"),
    h("ul", { "data-testid": "timeline" }, history(past?.events ?? [], deliveries)),
    h("h2", {}, "Webhook deliveries"),
    deliveryList === null
      ? h("p", { class: "muted" }, "Deliveries of this task are not available from this server.")
      : deliveries.length
        ? deliveries.map((d) => deliveryCard(d, ctx))
        : h("p", { class: "muted" }, "None: this task caused no webhook."),
  );
}
