// Tasks: the tenant's tasks, newest first (GET /tasks with filters and a cursor), and a search
// by task id or idempotency key.
import { api, query } from "./api.js";
import { badge, fill, go, h, link, notice, table, when } from "./dom.js";

const STATUSES = ["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "DEAD"];
const FILTERS = ["status", "command", "priority", "createdAfter", "createdBefore", "idempotencyKey"];
const TASK_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** datetime-local text (local time) ↔ RFC 3339 (UTC). */
const toRfc3339 = (local) => (local ? new Date(local).toISOString() : "");
function toLocal(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function filterForm(params) {
  const input = (name, attrs = {}) => h("input", { name, value: params.get(name) ?? "", ...attrs });
  const status = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)),
  );
  const after = h("input", { type: "datetime-local", name: "createdAfter", value: toLocal(params.get("createdAfter")) });
  const before = h("input", { type: "datetime-local", name: "createdBefore", value: toLocal(params.get("createdBefore")) });
  const search = h("input", {
    name: "search",
    placeholder: "task id or idempotency key",
    value: params.get("idempotencyKey") ?? "",
    size: 38,
  });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    h("label", {}, "Search", search),
    h("label", {}, "Status", status),
    h("label", {}, "Command", input("command", { size: 14 })),
    h("label", {}, "Priority", input("priority", { type: "number", min: 0, max: 9, size: 3 })),
    h("label", {}, "Created after", after),
    h("label", {}, "Created before", before),
    h("button", { type: "submit" }, "Apply"),
    link("/tasks", "Clear"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const wanted = search.value.trim();
    if (TASK_ID.test(wanted)) {
      go(`/tasks/${wanted}`);
      return;
    }
    const data = new FormData(form);
    const next = {
      status: data.get("status"),
      command: String(data.get("command")).trim(),
      priority: data.get("priority"),
      createdAfter: toRfc3339(after.value),
      createdBefore: toRfc3339(before.value),
      idempotencyKey: wanted,
    };
    go(`/tasks${query(next)}`);
  });
  return form;
}

export async function render(main, ctx) {
  const wanted = Object.fromEntries(FILTERS.map((f) => [f, ctx.params.get(f)]));
  const rows = h("div", { "data-testid": "task-list" });
  const more = h("div", { class: "actions" });
  fill(main, h("h1", {}, "Tasks"), filterForm(ctx.params), rows, more);
  const shown = [];

  const load = async (cursor) => {
    const page = await api("GET", `/tasks${query({ ...wanted, limit: 50, cursor })}`);
    shown.push(...page.tasks);
    if (shown.length === 0) {
      fill(rows, notice("No task matches."));
    } else {
      fill(
        rows,
        table(
          [{ title: "id" }, { title: "command" }, { title: "status" }, { title: "priority", num: true }, { title: "attempts", num: true }, { title: "created" }],
          shown.map((t) => [
            link(`/tasks/${t.id}`, t.id, { class: "mono" }),
            t.command,
            badge(t.lastKnownLocation === "DLQ_SET" ? "DEAD" : t.status),
            t.priority,
            `${t.attempts}/${t.maxAttempts}`,
            when(t.createdAt),
          ]),
        ),
      );
    }
    fill(
      more,
      page.nextCursor
        ? h("button", { type: "button", class: "secondary", onclick: () => load(page.nextCursor) }, "Load more")
        : null,
    );
  };
  await load(null);
}
