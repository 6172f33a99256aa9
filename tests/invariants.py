"""Structural invariants of a partition, checked after every contract test.

Every record is in exactly the structure its ``loc`` names (and nowhere else), ready/dlq
members are exactly the ones the record implies, lease deadlines match, the per-queue
counters equal the real sizes, and the listing indexes (``by_status``, ``by_command``) hold
exactly one entry per task, under its current listing status. A transition that forgets one
write breaks one of these.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from codeq.store.keys import KeySchema


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def check_partition(client: Any, keys: KeySchema, partition: int) -> list[str]:
    k = keys.partition(partition)
    problems: list[str] = []
    tasks = {_s(a): msgspec.json.decode(b) for a, b in (await client.hgetall(k.tasks)).items()}
    ready = [_s(m) for m in await client.zrange(k.ready, 0, -1)]
    delayed = {_s(m): s for m, s in await client.zrange(k.delayed, 0, -1, withscores=True)}
    leased = {_s(m): s for m, s in await client.zrange(k.leased, 0, -1, withscores=True)}
    dlq = [_s(m) for m in await client.zrange(k.dlq, 0, -1)]
    raw_qstats = {_s(a): _s(b) for a, b in (await client.hgetall(k.qstats)).items()}
    heads = {f.removesuffix("!head"): v for f, v in raw_qstats.items() if f.endswith("!head")}
    qstats = {f: int(v) for f, v in raw_qstats.items() if not f.endswith("!head")}
    payloads = {_s(a) for a in await client.hkeys(k.payloads)}
    registered = {_s(a) for a in await client.hkeys(k.queues)}

    ready_ids = Counter(m.rsplit("!", 1)[1] for m in ready)
    dlq_ids = Counter(m.rsplit("!", 1)[1] for m in dlq)
    for name, counter in (("ready", ready_ids), ("dlq", dlq_ids)):
        for task_id, n in counter.items():
            if n > 1:
                problems.append(f"{task_id} appears {n} times in {name}")

    expected_delayed: Counter[str] = Counter()
    expected_leased: Counter[str] = Counter()
    cancelled: Counter[str] = Counter()
    for task_id, rec in tasks.items():
        loc, status, q = rec.get("loc"), rec.get("status"), rec["q"]
        # what a listing's caps add up (list_tasks.lua status_caps): the queues of the registry
        if q not in registered and q != "~unknown":  # (lib.lua UNKNOWN_QUEUE: no tenant)
            problems.append(f"{task_id} in queue {q} that the registry does not name")
        if status == "CANCELLED":
            cancelled[q] += 1
        in_ready, in_delayed = task_id in ready_ids, task_id in delayed
        in_leased, in_dlq = task_id in leased, task_id in dlq_ids
        where = [
            n
            for n, f in (
                ("ready", in_ready),
                ("delayed", in_delayed),
                ("leased", in_leased),
                ("dlq", in_dlq),
            )
            if f
        ]
        want = {
            "PENDING_LIST": ["ready"],
            "DELAYED_ZSET": ["delayed"],
            "INPROG_SET": ["leased"],
            "DLQ_SET": ["dlq"],
            "NONE": [],
        }[loc]
        if where != want:
            problems.append(f"{task_id} loc={loc} but found in {where}")
        if task_id not in payloads:
            problems.append(f"{task_id} has no payload")
        if loc == "PENDING_LIST":
            member = f"{q}!{9 - rec['priority']}!{int(rec['seq']):015d}!{task_id}"
            if member not in ready:
                problems.append(f"{task_id} ready member mismatch")
            if status != "PENDING":
                problems.append(f"{task_id} in ready with status {status}")
        if loc == "DELAYED_ZSET":
            expected_delayed[q] += 1
            if status != "PENDING" or int(delayed[task_id]) != int(rec["runAt"]):
                problems.append(f"{task_id} delayed record/score mismatch")
        if loc == "INPROG_SET":
            expected_leased[q] += 1
            if status != "IN_PROGRESS" or not rec.get("leaseId") or not rec.get("workerId"):
                problems.append(f"{task_id} leased without a complete lease")
            elif int(leased[task_id]) != int(rec["leaseUntil"]):
                problems.append(f"{task_id} lease deadline mismatch")
        elif status == "IN_PROGRESS":
            problems.append(f"{task_id} IN_PROGRESS outside the leased set")
        if loc == "DLQ_SET" and status != "FAILED":
            problems.append(f"{task_id} in DLQ with status {status}")
        if status in ("COMPLETED", "FAILED", "CANCELLED") and loc == "NONE" and rec.get("leaseId"):
            problems.append(f"{task_id} terminal but still holds a lease")
    for task_id in list(delayed) + list(leased) + list(ready_ids) + list(dlq_ids):
        if task_id not in tasks:
            problems.append(f"{task_id} in a queue structure without a record")
    # the depth counters the scripts keep, against the structures they count
    actual: dict[str, Counter[str]] = {
        "ready": Counter(m.rsplit("!", 3)[0] for m in ready),  # <q>!<rank>!<seq>!<id>
        "delayed": expected_delayed,
        "leased": expected_leased,
        "dlq": Counter(m.rsplit("!", 2)[0] for m in dlq),  # <q>!<deadAt>!<id>
    }
    for field, value in qstats.items():
        if field.startswith("!"):
            continue  # the partition's layout marks ("!counted")
        q, kind = field.rsplit("!", 1)
        if kind.startswith("n:"):  # an outcome total (lib.lua ``tally``): only ever counts up
            if kind[2:] not in _OUTCOMES or value < 0:
                problems.append(f"outcome total {field}={value}")
            continue
        want_n = actual[kind][q]
        if value != want_n:
            problems.append(f"counter {field}={value}, actual {want_n}")
    for kind, counts in actual.items():
        for q, n in counts.items():
            if n and f"{q}!{kind}" not in qstats:
                problems.append(f"counter {q}!{kind} missing, actual {n}")
    # a listing caps a queue's cancelled tasks by its total of cancels: never fewer than live
    for q, n in cancelled.items():
        if qstats.get(f"{q}!n:cancelled", 0) < n:
            problems.append(f"{n} cancelled tasks of {q} above its total {q}!n:cancelled")
    # the floors: no member of the delayed (leased) set scores below its floor, or claims,
    # which scan from there (and not at all while now is below it), would miss it
    for field, members in (("!delayed_floor", delayed), ("!leased_floor", leased)):
        if field in qstats and members and min(members.values()) < qstats[field]:
            problems.append(f"{field}={qstats[field]} above a member at {min(members.values())}")
    # a claim looks from a queue's head mark on: nothing ready may sort before it
    for m in ready:
        q = m.rsplit("!", 3)[0]
        if q in heads and m.encode() < heads[q].encode():
            problems.append(f"ready member {m} sorts before the head mark {heads[q]}")
    problems += await _check_listing(client, k, tasks)
    return problems


#: a record's listing status (lib.lua ``ix_code``)
_CODES = {"PENDING": "P", "IN_PROGRESS": "R", "COMPLETED": "C", "FAILED": "F", "CANCELLED": "X"}
#: the outcome totals a queue has (lib.lua ``OUTCOMES``)
_OUTCOMES = frozenset({"created", "completed", "failed", "dead", "cancelled"})


async def _check_listing(client: Any, k: Any, tasks: dict[str, Any]) -> list[str]:
    """Each task has exactly its one ``by_status`` and one ``by_command`` entry; no entry is
    left without its task. A quarantined record (``corrupt``: its old entry could not be read)
    is listed under its new entry only, and the old may stay behind."""
    problems: list[str] = []
    by_status = [_s(m) for m in await client.zrange(k.by_status, 0, -1)]
    by_command = [_s(m) for m in await client.zrange(k.by_command, 0, -1)]
    want_status: set[str] = set()
    want_command: set[str] = set()
    quarantined = set()
    # qstats "!ixw" (lib.lua ``ixw``): absent, delayed tasks are listed under P; "0", under W,
    # or still under P until the sweeper has moved them (either entry is the task's one); "1",
    # under W
    ixw = _s(await client.hget(k.qstats, "!ixw") or b"")
    older: dict[str, str] = {}
    for task_id, rec in tasks.items():
        if "corrupt" in rec:
            quarantined.add(task_id)
        tenant_seg, slash, _ = rec["q"].partition("/")
        if not slash:
            continue  # a quarantined record of an unknown queue: not listed
        code = "D" if rec.get("loc") == "DLQ_SET" else _CODES[rec["status"]]
        pos = f"{int(rec['createdAt']):013d}!{task_id}"
        if code == "P" and rec.get("loc") == "DELAYED_ZSET" and ixw:
            code = "W"  # PENDING and waiting
            if ixw == "0":
                older[f"{tenant_seg}!P!{pos}"] = f"{tenant_seg}!W!{pos}"
        want_status.add(f"{tenant_seg}!{code}!{pos}")
        if task_id not in quarantined:
            want_command.add(f"{rec['q']}!{pos}")
    for p_member, w_member in older.items():
        if p_member in by_status and w_member not in by_status:
            want_status.discard(w_member)
            want_status.add(p_member)
    for name, have, want in (
        ("by_status", by_status, want_status),
        ("by_command", by_command, want_command),
    ):
        for member in want - set(have):
            problems.append(f"{name} lacks {member}")
        for member in set(have) - want:
            if member.rsplit("!", 1)[1] not in quarantined:
                problems.append(f"{name} holds {member}, which no task implies")
        if len(have) != len(set(have)):
            problems.append(f"{name} holds a member twice")
    return problems


async def check_all(client: Any, keys: KeySchema) -> list[str]:
    out: list[str] = []
    for p in range(keys.partitions):
        out += await check_partition(client, keys, p)
    return out
