// Webhook endpoints (producer) and worker subscriptions: status, failure rate, recent
// deliveries; enable/disable, rotate secret, replay dead deliveries (admin).
import { api, enc } from "./api.js";
import { actionButton, badge, fields, fill, h, link, notice, outLink, table, when } from "./dom.js";
import { deliveryCard } from "./deliveries.js";

/** Share of the recent attempts that did not get a 2xx, as text ("—" without attempts). */
function failureRate(deliveries) {
  const attempts = deliveries.flatMap((d) => d.attemptLog ?? []);
  if (!attempts.length) return "—";
  const failed = attempts.filter((a) => !(a.statusCode >= 200 && a.statusCode < 300)).length;
  return `${Math.round((100 * failed) / attempts.length)}% of ${attempts.length} attempts`;
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
  const recent = await Promise.all(endpoints.map((e) => api("GET", `/webhooks/endpoints/${enc(e.id)}/deliveries`)));
  if (!ctx.alive()) return;
  const out = h("div", { "data-testid": "action-result" });
  const redraw = () => render(main, ctx);
  fill(
    main,
    h("h1", {}, "Webhook endpoints"),
    out,
    endpoints.length
      ? table(
          [{ title: "endpoint" }, { title: "events" }, { title: "status" }, { title: "failure rate" }, { title: "recent" }, { title: "" }],
          endpoints.map((e, i) => [
            [link(`/webhooks/${enc(e.id)}`, e.description || e.id), h("br"), outLink(e.url)],
            e.eventTypes.join(", "),
            [badge(e.enabled ? "enabled" : "disabled"), e.disabledReason ? h("div", { class: "muted" }, e.disabledReason) : null],
            failureRate(recent[i].deliveries),
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
  const deliveries = (await api("GET", `/webhooks/endpoints/${enc(id)}/deliveries`)).deliveries;
  if (!ctx.alive()) return;
  const out = h("div", { "data-testid": "action-result" });
  fill(
    main,
    h("h1", {}, "Endpoint ", h("span", { class: "mono" }, e.id)),
    h("div", { class: "actions" }, endpointActions(e, ctx, out, () => renderEndpoint(main, ctx, id))),
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
        ["failure rate", failureRate(deliveries)],
        ["created", when(e.createdAt)],
      ]),
    ),
    h("h2", {}, "Recent deliveries"),
    deliveries.length ? deliveries.slice(0, 20).map((d) => deliveryCard(d, ctx)) : notice("No delivery yet."),
  );
}
