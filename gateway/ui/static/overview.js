// Overview: per command, the depths and what happened in each of the last minutes — created,
// completed, failed or dead-lettered — from the queue stats (admin: GET /admin/queues, every
// 3 s; the windows come from the sweeper's once-a-minute snapshots). A token that is not an
// admin sees how many of its tenant's tasks were created per minute (GET /tasks, every 15 s).
import { api, query } from "./api.js";
import { fill, h, link, notice, spark, table } from "./dom.js";

const DEPTH_EVERY_MS = 3000;
const RATE_EVERY_MS = 15000;
const MINUTES = 5;
const RATE_PAGES = 4; // at most 4 pages of 500 newest tasks per refresh: past that, "≥"
const KEEP_MS = MINUTES * 60_000;

// Depth samples per tenant and command, kept while the tab lives (so a revisit has a trend).
const samples = new Map();

function remember(tenant, queues, now) {
  for (const q of queues) {
    const key = `${q.tenantId ?? tenant}/${q.command}`;
    const list = samples.get(key) ?? [];
    list.push({ t: now, backlog: q.ready + q.delayed + q.inProgress });
    while (list.length && list[0].t < now - KEEP_MS) list.shift();
    samples.set(key, list);
  }
}

/** Per minute, from a queue's windows (the last one still running is left out unless it is the
 * only one): `pick` chooses what to count. */
function perMinute(q, pick) {
  const windows = q?.windows ?? [];
  const shown = windows.length > 1 ? windows.slice(0, -1) : windows;
  return shown.slice(-15).map((w) => {
    const ms = Math.max(1000, Date.parse(w.end) - Date.parse(w.start));
    return Math.round((pick(w) * 60_000) / ms);
  });
}

function rateCell(values) {
  if (!values.length) return "—";
  return [spark(values), ` ${values[values.length - 1]}/min`];
}

/** Tasks created per command in each of the last MINUTES minutes (oldest first). */
async function createdPerMinute(now) {
  const since = new Date(now - KEEP_MS).toISOString();
  const counts = new Map();
  let cursor = null;
  let pages = 0;
  do {
    const page = await api("GET", `/tasks${query({ createdAfter: since, limit: 500, cursor })}`);
    for (const t of page.tasks) {
      const minute = Math.floor((now - Date.parse(t.createdAt)) / 60_000);
      if (minute < 0 || minute >= MINUTES) continue;
      const key = t.command.toLowerCase();
      const row = counts.get(key) ?? new Array(MINUTES).fill(0);
      row[MINUTES - 1 - minute] += 1;
      counts.set(key, row);
    }
    cursor = page.nextCursor;
    pages += 1;
  } while (cursor && pages < RATE_PAGES);
  return { counts, capped: Boolean(cursor) };
}

export async function render(main, ctx) {
  const { me } = ctx;
  const status = h("p", { class: "muted", "data-testid": "refreshed" });
  const body = h("div");
  fill(
    main,
    h("h1", {}, "Overview"),
    me.admin ? null : notice("Queue depths need an admin token: this token sees the rates of its tenant's tasks only."),
    body,
    status,
  );
  let queues = [];
  let rates = { counts: new Map(), capped: false };
  let rateError = null;
  let lastRate = 0;

  const draw = () => {
    const commands = new Set([...queues.map((q) => q.command), ...rates.counts.keys()]);
    if (commands.size === 0) {
      fill(body, notice("No queues yet: create a task and it shows here."));
      return;
    }
    const byCommand = new Map(queues.map((q) => [me.superAdmin ? `${q.tenantId}/${q.command}` : q.command, q]));
    const keys = me.superAdmin ? [...byCommand.keys()] : [...commands].sort();
    const rows = keys.map((key) => {
      const q = byCommand.get(key);
      const command = q?.command ?? key;
      const trend = (samples.get(`${q?.tenantId ?? me.tenantId}/${command}`) ?? []).map((s) => s.backlog);
      let created;
      if (me.admin) {
        created = rateCell(perMinute(q, (w) => w.created));
      } else {
        const counts = rates.counts.get(command) ?? new Array(MINUTES).fill(0);
        created = [spark(counts), ` ${counts[MINUTES - 1]}${rates.capped ? "+" : ""}/min`];
      }
      const cells = [
        link(`/tasks?command=${encodeURIComponent(command)}`, command),
        q ? q.ready : "—",
        q ? q.delayed : "—",
        q ? q.inProgress : "—",
        q ? (q.dlq > 0 && me.admin ? link(`/dlq/${encodeURIComponent(command)}`, String(q.dlq)) : q.dlq) : "—",
        created,
        me.admin ? rateCell(perMinute(q, (w) => w.completed)) : "—",
        me.admin ? rateCell(perMinute(q, (w) => w.failed + w.dead)) : "—",
        trend.length > 1 ? spark(trend) : "—",
      ];
      return me.superAdmin ? [q?.tenantId ?? "", ...cells] : cells;
    });
    const columns = [
      { title: "command" },
      { title: "ready", num: true },
      { title: "delayed", num: true },
      { title: "in progress", num: true },
      { title: "dead", num: true },
      { title: "created /min" },
      { title: "completed /min" },
      { title: "failed or dead /min" },
      { title: "backlog trend" },
    ];
    fill(
      body,
      table(me.superAdmin ? [{ title: "tenant" }, ...columns] : columns, rows, { "data-testid": "queues" }),
      rateError ? notice(`Rates unavailable: ${rateError}`) : null,
    );
  };

  const refresh = async () => {
    const now = Date.now();
    if (me.admin) {
      queues = (await api("GET", "/admin/queues")).queues;
      remember(me.tenantId, queues, now);
    }
    if (!me.admin && now - lastRate >= RATE_EVERY_MS) {
      lastRate = now;
      try {
        rates = await createdPerMinute(now);
        rateError = null;
      } catch (err) {
        rateError = err.message;
      }
    }
    draw();
    status.textContent = `Refreshed ${new Date().toLocaleTimeString()} · every ${DEPTH_EVERY_MS / 1000} s`;
  };

  await refresh();
  const timer = setInterval(async () => {
    if (!ctx.alive()) return clearInterval(timer);
    try {
      await refresh();
    } catch (err) {
      status.textContent = `Refresh failed: ${err.message}`;
    }
  }, DEPTH_EVERY_MS);
}
