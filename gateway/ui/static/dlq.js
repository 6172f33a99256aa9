// Dead letters (admin): the dead tasks of each queue, oldest first, and requeue one or many
// (POST /admin/queues/{command}/dlq/requeue).
import { api, enc, query } from "./api.js";
import { actionButton, fill, h, link, notice, table, when } from "./dom.js";

export async function render(main, ctx, command) {
  if (!ctx.me.admin) {
    fill(main, h("h1", {}, "Dead letters"), notice("Dead letters need an admin token."));
    return;
  }
  if (command === undefined) {
    const queues = (await api("GET", "/admin/queues")).queues.filter((q) => q.dlq > 0);
    fill(
      main,
      h("h1", {}, "Dead letters"),
      queues.length
        ? table(
            [{ title: "command" }, { title: "dead", num: true }],
            queues.map((q) => [link(`/dlq/${enc(q.command)}`, q.command), q.dlq]),
            { "data-testid": "dlq-queues" },
          )
        : notice("No dead tasks."),
    );
    return;
  }
  const cursor = ctx.params.get("cursor");
  const page = await api("GET", `/admin/queues/${enc(command)}/dlq${query({ limit: 50, cursor })}`);
  const out = h("div", { "data-testid": "action-result" });
  const boxes = page.tasks.map((t) => h("input", { type: "checkbox", value: t.id, "aria-label": `select ${t.id}` }));
  const requeue = async (body) => {
    const r = await api("POST", `/admin/queues/${enc(command)}/dlq/requeue`, body);
    setTimeout(() => ctx.alive() && render(main, ctx, command), 800);
    return `Requeued ${r.requeued} task(s).`;
  };
  fill(
    main,
    h("h1", {}, "Dead letters of ", h("span", { class: "mono" }, command)),
    h(
      "div",
      { class: "actions" },
      actionButton(
        "Requeue selected",
        () => {
          const ids = boxes.filter((b) => b.checked).map((b) => b.value);
          if (!ids.length) throw new Error("Select the tasks to requeue first.");
          return requeue({ ids });
        },
        { out, attrs: { "data-admin": "requeue-selected" } },
      ),
      actionButton(
        "Requeue all",
        () => (confirm(`Requeue every dead ${command} task (up to 1000)?`) ? requeue({ all: true }) : null),
        { out, kind: "danger", attrs: { "data-admin": "requeue-all" } },
      ),
      link("/dlq", "all queues"),
    ),
    out,
    page.tasks.length
      ? table(
          [{ title: "" }, { title: "id" }, { title: "error" }, { title: "attempts", num: true }, { title: "created" }, { title: "updated" }],
          page.tasks.map((t, i) => [
            boxes[i],
            link(`/tasks/${enc(t.id)}`, t.id, { class: "mono" }),
            t.error ?? "",
            `${t.attempts}/${t.maxAttempts}`,
            when(t.createdAt),
            when(t.updatedAt),
          ]),
          { "data-testid": "dlq-tasks" },
        )
      : notice("No dead tasks in this queue."),
    page.nextCursor ? link(`/dlq/${enc(command)}?cursor=${enc(page.nextCursor)}`, "Next page") : null,
  );
}
