// Webhook endpoints (producer) and worker subscriptions: status, attempt statistics (GET
// .../stats: last hour, last day), recent deliveries; enable/disable, rotate secret, send a
// test event, replay dead deliveries (admin).
import { api, enc } from "./api.js";
import { actionButton, badge, fields, fill, h, link, notice, outLink, table, when } from "./dom.js";
import { deliveryCard } from "./deliveries.js";

const stats = (id) => api("GET", `/webhooks/endpoints/${enc(id)}/stats`);

/** A statistic as text: "—" when there is none (no attempt, or none with a latency). */
const figure = (v) => (v === null || v === undefined ? "—" : String(v));
const rate = (r) => (r === null || r === undefined ? "—" : `${Math.round(r * 1000) / 10}%`);

const WINDOWS = [
  ["last hour", "lastHour"],
  ["last day", "lastDay"],
];

/** Both windows of an endpoint's statistics, one row each. */
function statsTable(s) {
  return [
    h("h2", {}, "Attempt statistics"),
    table(
      ["window", "attempts", "succeeded", "failed", "success rate", "p50 ms", "p90 ms", "p99 ms"].map((title, i) => ({ title, num: i > 0 })),
      WINDOWS.map(([name, key]) => {
        const w = s[key];
        return [name, w.attempts, w.succeeded, w.failed, rate(w.successRate), figure(w.p50Ms), figure(w.p90Ms), figure(w.p99Ms)];
      }),
    ),
    h("div", { class: "muted" }, "as of ", when(s.at), " · latencies from a histogram (within 19 %)"),
  ];
}

/** What a test send's delivery record says: its status, the answer's code and latency. */
function testResult(d) {
  const last = d.attemptLog?.at(-1);
  const answer = !last
    ? "no attempt"
    : [last.statusCode ? `HTTP ${last.statusCode}` : last.error || "no answer", `${last.latencyMs} ms`].join(" · ");
  return `Test event ${d.id}: ${d.status} · ${answer}`;
}

function endpointActions(e, ctx, out, redraw) {
  const buttons = [
    actionButton(
      e.enabled ? "Disable" : "Enable",
      async () => {
        await api("PATCH", `/webhooks/endpoints/${enc(e.id)}`, { enabled: !e.enabled });
        redraw();
        return null;
      },
      { out, kind: "secondary", attrs: { "data-action": e.enabled ? "disable" : "enable" } },
    ),
    actionButton(
      "Rotate secret",
      async () => {
        if (!confirm("Rotate the signing secret? The old one keeps signing for 24 hours.")) return null;
        const r = await api("POST", `/webhooks/endpoints/${enc(e.id)}/rotate-secret`);
        fill(out, notice(`New secret (shown once): ${r.secret} · the previous one signs until ${r.previousSecretExpiresAt}`, "ok"));
        return null;
      },
      { out, kind: "secondary", attrs: { "data-action": "rotate" } },
    ),
  ];
  if (ctx.me.admin) {
    buttons.push(
      actionButton(
        "Replay dead deliveries",
        async () => {
          const r = await api("POST", "/admin/deliveries/dlq/replay", { endpointId: e.id });
          return `Replayed ${r.replayed} dead deliveries.`;
        },
        { out, kind: "secondary", attrs: { "data-admin": "replay-dead" } },
      ),
    );
  }
  return buttons;
}

async function subscriptions(me) {
  if (!me.worker || !me.scopes.includes("codeq:subscribe")) return null;
  const subs = (await api("GET", "/workers/subscriptions")).subscriptions;
  return [
    h("h2", {}, "Worker subscriptions"),
    subs.length
      ? table(
          [{ title: "id" }, { title: "callback" }, { title: "commands" }, { title: "mode" }, { title: "expires" }],
          subs.map((s) => [h("span", { class: "mono" }, s.subscriptionId), outLink(s.callbackUrl), s.eventTypes.join(", "), s.deliveryMode, when(s.expiresAt)]),
        )
      : notice("No live worker subscription."),
  ];
}

export async function render(main, ctx) {
  const { me } = ctx;
  if (!me.producer) {
    fill(main, h("h1", {}, "Webhooks"), notice("Webhook endpoints belong to producers: sign in with a producer token."), await subscriptions(me));
    return;
  }
  const endpoints = (await api("GET", "/webhooks/endpoints")).endpoints;
  const [recent, hour] = await Promise.all([
    Promise.all(endpoints.map((e) => api("GET", `/webhooks/endpoints/${enc(e.id)}/deliveries`))),
    Promise.all(endpoints.map((e) => stats(e.id).then((s) => s.lastHour))),
  ]);
  if (!ctx.alive()) return;
  const out = h("div", { "data-testid": "action-result" });
  const redraw = () => render(main, ctx);
  fill(
    main,
    h("h1", {}, "Webhook endpoints"),
    out,
    endpoints.length
      ? table(
          [
            { title: "endpoint" },
            { title: "events" },
            { title: "status" },
            { title: "attempts 1 h", num: true },
            { title: "success 1 h", num: true },
            { title: "p50 / p99 ms 1 h", num: true },
            { title: "recent" },
            { title: "" },
          ],
          endpoints.map((e, i) => [
            [link(`/webhooks/${enc(e.id)}`, e.description || e.id), h("br"), outLink(e.url)],
            e.eventTypes.join(", "),
            [badge(e.enabled ? "enabled" : "disabled"), e.disabledReason ? h("div", { class: "muted" }, e.disabledReason) : null],
            hour[i].attempts,
            rate(hour[i].successRate),
            `${figure(hour[i].p50Ms)} / ${figure(hour[i].p99Ms)}`,
            link(`/deliveries?endpoint=${enc(e.id)}`, `${recent[i].deliveries.length} deliveries`),
            h("div", { class: "actions" }, endpointActions(e, ctx, out, redraw)),
          ]),
          { "data-testid": "endpoints" },
        )
      : notice("No endpoint yet: POST /v1/codeq/webhooks/endpoints registers one."),
    await subscriptions(me),
  );
}

export async function renderEndpoint(main, ctx, id) {
  const e = await api("GET", `/webhooks/endpoints/${enc(id)}`); // 404: the not-found page
  const [deliveries, first] = await Promise.all([
    api("GET", `/webhooks/endpoints/${enc(id)}/deliveries`).then((r) => r.deliveries),
    stats(id),
  ]);
  if (!ctx.alive()) return;
  const out = h("div", { "data-testid": "action-result" });
  const card = h("div", { class: "card", "data-testid": "endpoint-stats" }, statsTable(first));
  const sendTest = actionButton(
    "Send test event",
    async () => {
      const d = await api("POST", `/webhooks/endpoints/${enc(id)}/test`);
      fill(out, notice(testResult(d), d.status === "succeeded" ? "ok" : "error"));
      const now = await stats(id); // the attempt counts in them: shown afresh
      if (ctx.alive()) fill(card, statsTable(now));
      return null;
    },
    { out, attrs: { "data-action": "send-test" } },
  );
  fill(
    main,
    h("h1", {}, "Endpoint ", h("span", { class: "mono" }, e.id)),
    h("div", { class: "actions" }, sendTest, endpointActions(e, ctx, out, () => renderEndpoint(main, ctx, id))),
    out,
    h(
      "div",
      { class: "card" },
      fields([
        ["url", outLink(e.url)],
        ["description", e.description],
        ["events", e.eventTypes.join(", ")],
        ["commands", e.commands?.join(", ")],
        ["status", badge(e.enabled ? "enabled" : "disabled")],
        ["disabled because", e.disabledReason],
        ["created", when(e.createdAt)],
      ]),
    ),
    card,
    h("h2", {}, "Recent deliveries"),
    deliveries.length ? deliveries.slice(0, 20).map((d) => deliveryCard(d, ctx)) : notice("No delivery yet."),
  );
}
