"""The delivery side of a store (spec 03): consumer groups on the partition streams
(:class:`~codeq.store.protocol.ConsumerGroups`) and the durable delivery schedule
(:class:`~codeq.store.protocol.Deliveries`) with its listing index, counters, endpoint
statistics and retention (issue 18), all over the delivery keys of a partition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from redis import exceptions as rexc

from codeq.store.base import ScriptStore
from codeq.store.errors import UNAVAILABLE, StoreError, unavailable
from codeq.store.groups import StreamGroups
from codeq.store.keys import escape
from codeq.store.protocol import (
    DeliveryIndexPage,
    DeliveryQuery,
    EndpointBuckets,
    JobStep,
    PruneReply,
    StatsBucket,
)
from codeq.store.streams import (
    text,
)

__all__ = ["DeliveryStore"]


class _About(msgspec.Struct, rename="camel"):
    """The fields of a new delivery record its indexes need (``dlv_enqueue.lua``): the rest
    of the record, body included, is never decoded here nor by the script."""

    task_id: str | None = None
    tenant: str = ""
    created_at: int = 0
    endpoint_id: str | None = None
    event_type: str | None = None
    status: str = "pending"


_about = msgspec.json.Decoder(_About)


def _index_fields(record: bytes) -> tuple[str, str, int, str, str, str]:
    """(task id, tenant, createdAt, endpoint id, event type, status) of a record, '' where it
    has none."""
    try:
        a = _about.decode(record)
    except (msgspec.DecodeError, msgspec.ValidationError):
        a = _About()
    return (
        a.task_id or "",
        a.tenant,
        a.created_at,
        a.endpoint_id or "",
        a.event_type or "",
        a.status,
    )


#: record status -> its code in the counters and the listing index (dlv_lib.lua ``CODES``)
STATUS_CODES = {"pending": "P", "retrying": "R", "succeeded": "S", "dead": "D", "gone": "G"}
#: the statuses with ranges of their own in the listing index (dlv_lib.lua ``LISTED``): the
#: few; a listing of the others reads the ranges of any status and checks the records
_LISTED = frozenset({"retrying", "dead", "gone"})
#: statistics rings (dlv_lib.lua ``stats_note``): minute buckets of the last hour, hour
#: buckets of the last day, and latency buckets per bucket
MINUTE_SLOTS, HOUR_SLOTS, LATENCY_BUCKETS = 60, 24, 64


def _plan(q: DeliveryQuery) -> tuple[str, list[str], tuple[str, ...], str, str, str]:
    """(index, range prefixes, then what the records must be checked for: statuses, endpoint,
    event type, task) of a search: the range that covers the most filters exactly. Without a
    status of its own range (``pending``, ``succeeded``), the ranges of any status ("a"), whose
    members never move, with the status checked on the records."""
    t = escape(q.tenant)
    listed = bool(q.statuses) and _LISTED.issuperset(q.statuses)
    codes = [STATUS_CODES[s] for s in q.statuses] if listed else []
    unchecked = () if listed else q.statuses
    ep, kind, task = q.endpoint_id or "", q.event_type or "", q.task_id or ""
    if task:  # a task causes few deliveries: its own range, everything else checked
        return "task", [task], q.statuses, ep, kind, ""
    if ep:
        e = escape(ep)
        return "index", [f"{t}!e!{e}!{c}" for c in codes or ["a"]], unchecked, "", kind, ""
    if kind and not codes:
        return "index", [f"{t}!v!{escape(kind)}"], q.statuses, "", "", ""
    if codes:
        return "index", [f"{t}!s!{c}" for c in codes], (), "", kind, ""
    return "index", [f"{t}!a"], unchecked, "", kind, ""


def _bucket(raw: Any) -> StatsBucket | None:
    """A bucket as ``stats_note`` writes it: "<epoch>,<ok>,<failed>,<i>=<n>,..."."""
    if raw is None:
        return None
    try:
        epoch, ok, failed, *rest = text(raw).split(",")
        latency = [0] * LATENCY_BUCKETS
        for part in rest:
            i, n = part.split("=")
            latency[int(i)] = int(n)
        return StatsBucket(epoch=int(epoch), ok=int(ok), failed=int(failed), latency=tuple(latency))
    except (ValueError, IndexError):
        return None  # not a bucket this version writes: nothing counted


class DeliveryStore(StreamGroups):
    """The delivery side of a store (spec 03): consumer groups on the partition streams
    (:class:`StreamGroups`) and the durable delivery schedule; every change to deliveries is
    one script (``dlv_*.lua``)."""

    def __init__(self, store: ScriptStore) -> None:
        super().__init__(store, lambda p: store.keys.delivery(p).events, store.keys.consumer_alive)
        self._client = store.client
        self.keys = store.keys

    async def _call(self, name: str, partition: int, args: Sequence[Any]) -> Any:
        keys = self.keys.delivery(partition).all
        return await self._store._eval(self._store._scripts[name], keys, args)

    async def enqueue(
        self, partition: int, group: str, entry_ids: Sequence[str], lease_ms: int,
        deliveries: Sequence[tuple[str, bytes]], *,
        quarantined: Sequence[tuple[str, str]] = (),
    ) -> list[str]:  # fmt: skip
        """Write the deliveries of ``entry_ids`` and acknowledge those entries, in one step;
        ``quarantined`` (entry id, reason) are entries of ``entry_ids`` that could not be
        handled: each gets a dead-letter record (the poison list) in the same step."""
        args: list[Any] = [group, len(entry_ids), *entry_ids, lease_ms, len(quarantined)]
        for entry_id, reason in quarantined:
            args.extend((entry_id, reason))
        for delivery_id, record in deliveries:
            args.extend((delivery_id, record, *_index_fields(record)))
        return [text(x) for x in await self._call("dlv_enqueue", partition, args)]

    async def claim_due(self, partition: int, *, lease_ms: int, limit: int) -> list[bytes]:
        reply = await self._call("dlv_claim", partition, [lease_ms, limit])
        return [bytes(reply[i + 1]) for i in range(0, len(reply), 2)]

    async def outcome(
        self, partition: int, delivery_id: str, outcome: str, *, delay_ms: int,
        attempt: bytes, kept: int,
    ) -> tuple[str, int]:  # fmt: skip
        """Record one attempt: (new status, attempts); ("MISSING", 0) when it is gone."""
        (reply,) = await self.outcomes(partition, [(delivery_id, outcome, delay_ms, attempt)], kept)
        return reply

    async def outcomes(
        self, partition: int, items: Sequence[tuple[str, str, int, bytes]], kept: int
    ) -> list[tuple[str, int]]:
        """Record attempts, each (delivery id, outcome, delay ms, attempt JSON), in one call;
        (new status, attempts) for each, ("MISSING", 0) for one that is gone."""
        args: list[Any] = [kept]
        for item in items:
            args.extend(item)
        reply = await self._call("dlv_outcome", partition, args)
        return [(text(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def replay(
        self, partition: int, *, tenant: str | None, ids: Sequence[str] = (), limit: int = 100
    ) -> list[str]:
        reply = await self._call("dlv_replay", partition, [tenant or "", limit, *ids])
        return [text(x) for x in reply[1:]]

    async def poison(
        self, partition: int, group: str, entry_id: str, receives: int,
        reason: str = "received too many times",
    ) -> None:  # fmt: skip
        """Set an entry aside (a dead-letter record with ``reason``) and acknowledge it."""
        await self._call("dlv_poison", partition, [group, entry_id, receives, reason])

    async def set_aside(self, partition: int, *, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest dead-letter records of stream entries (group, entry, reason, at)."""
        raws = await self._cmd("lrange", self.keys.delivery(partition).poison, 0, limit - 1)
        return [msgspec.json.decode(raw) for raw in raws or ()]

    async def defer(self, partition: int, delivery_id: str, *, delay_ms: int) -> bool:
        """Move a leased delivery's next attempt ``delay_ms`` ahead without counting an
        attempt (its target is rate limited); False when it is gone or no longer scheduled."""
        reply = await self._call("dlv_defer", partition, [delivery_id, delay_ms])
        return text(reply[0]) == "OK"

    async def get(self, partition: int, delivery_id: str) -> bytes | None:
        raw = await self._cmd("hget", self.keys.delivery(partition).records, delivery_id)
        return None if raw is None else bytes(raw)

    async def of_task(
        self, partition: int, tenant: str, task_id: str, *, limit: int
    ) -> list[bytes] | None:
        """The records of the deliveries a task caused (at most ``limit``); None when the task
        is absent or another tenant's."""
        reply = await self._call("dlv_task", partition, [tenant, task_id, limit])
        if text(reply[0]) != "OK":
            return None
        return [bytes(r) for r in reply[1:]]

    async def dead_page(self, partition: int, *, limit: int) -> list[bytes]:
        k = self.keys.delivery(partition)
        ids = await self._cmd("zrange", k.dead, 0, limit - 1)
        if not ids:
            return []
        raws = await self._cmd("hmget", k.records, ids)
        return [bytes(r) for r in raws if r is not None]

    async def search(self, partition: int, query: DeliveryQuery) -> DeliveryIndexPage:
        """One page of a tenant's deliveries in one partition (``dlv_search.lua``)."""
        index, prefixes, statuses, ep, kind, task = _plan(query)
        args = [
            query.tenant,
            index,
            ",".join(prefixes),
            "" if query.created_from_ms is None else query.created_from_ms,
            "" if query.created_before_ms is None else query.created_before_ms,
            query.after or "",
            query.size,
            query.bound,
            ",".join(statuses),
            ep,
            kind,
            task,
        ]
        reply = await self._call("dlv_search", partition, args)
        reached = text(reply[0]) or None
        return DeliveryIndexPage(records=tuple(bytes(r) for r in reply[1:]), reached=reached)

    async def _job_call(self, name: str, partition: int, args: Sequence[Any]) -> Any:
        keys = (*self.keys.delivery(partition).all, *self.keys.replay_jobs(partition))
        return await self._store._eval(self._store._scripts[name], keys, args)

    async def create_job(self, partition: int, job_id: str, tenant: str, part: bytes) -> bool:
        """Write this partition's part of a replay job, queued (``dlv_job_put.lua``); False
        when a part of that id exists."""
        reply = await self._job_call("dlv_job_put", partition, [job_id, tenant, part])
        return text(reply[0]) == "OK"

    async def lease_job(self, partition: int, owner: str, *, lease_ms: int) -> bytes | None:
        """Lease a runnable part of a replay job (``dlv_job_lease.lua``): its JSON, or None."""
        reply = await self._job_call("dlv_job_lease", partition, [owner, lease_ms])
        return None if not reply else bytes(reply)

    async def job_step(
        self, partition: int, job_id: str, owner: str, *, lease_ms: int, cursor: str,
        reached: str | None, statuses: Sequence[str], ids: Sequence[str],
    ) -> JobStep:  # fmt: skip
        """Replay ``ids`` (a page read from ``cursor``) and move the part's cursor to
        ``reached`` in one step (``dlv_job_step.lua``)."""
        args = [job_id, owner, lease_ms, cursor, reached or "", ",".join(statuses), *ids]
        reply = await self._job_call("dlv_job_step", partition, args)
        return JobStep(
            outcome=text(reply[0]),
            replayed=int(reply[1]),
            skipped=int(reply[2]),
            status=text(reply[3]),
        )

    async def cancel_job(self, partition: int, job_id: str, tenant: str) -> str:
        """Cancel the part (``dlv_job_cancel.lua``): 'cancelled', the status it had ended in,
        or 'missing'."""
        return text((await self._job_call("dlv_job_cancel", partition, [job_id, tenant]))[0])

    async def job(self, partition: int, job_id: str) -> bytes | None:
        """This partition's part of a replay job (any tenant's: the caller checks)."""
        raw = await self._cmd("hget", self.keys.replay_jobs(partition)[0], job_id)
        return None if raw is None else bytes(raw)

    async def recent_jobs(self, partition: int, tenant: str, *, limit: int) -> list[bytes]:
        """The tenant's newest replay jobs' parts in this partition, newest first."""
        jobs, recent, _, _ = self.keys.replay_jobs(partition)
        t = escape(tenant)
        members = await self._cmd("zrevrangebylex", recent, f'({t}"', f"[{t}!", start=0, num=limit)
        ids = [text(m).rsplit("!", 1)[1] for m in members or ()]
        if not ids:
            return []
        return [bytes(r) for r in await self._cmd("hmget", jobs, ids) if r is not None]

    async def counts(
        self, partition: int, tenant: str, *, endpoint_id: str | None = None
    ) -> dict[str, int]:
        """The counters ``dlv_lib.lua`` keeps (``counts``), one HMGET."""
        t = escape(tenant)
        head = f"{t}!s!" if endpoint_id is None else f"{t}!e!{escape(endpoint_id)}!"
        fields = [head + code for code in STATUS_CODES.values()]
        values = await self._cmd("hmget", self.keys.delivery(partition).counts, fields)
        return {status: int(v or 0) for status, v in zip(STATUS_CODES, values or (), strict=True)}

    async def endpoint_buckets(self, partition: int, endpoint_id: str) -> EndpointBuckets:
        """The endpoint's statistics rings in this partition, one HMGET."""
        e = escape(endpoint_id)
        fields = [f"{e}!m!{i}" for i in range(MINUTE_SLOTS)]
        fields += [f"{e}!h!{i}" for i in range(HOUR_SLOTS)]
        values = await self._cmd("hmget", self.keys.delivery(partition).stats, fields)
        buckets = [_bucket(v) for v in values or ()]
        return EndpointBuckets(
            minutes=tuple(b for b in buckets[:MINUTE_SLOTS] if b is not None),
            hours=tuple(b for b in buckets[MINUTE_SLOTS:] if b is not None),
        )

    async def prune(
        self, partition: int, *, token: str, lock_ms: int, limit: int, retention_ms: int
    ) -> PruneReply | None:
        """One retention step (``dlv_prune.lua``), then the pruned deliveries leave their
        endpoints' recent lists (``{hooks}`` keys, which no partition script may touch: a
        crash in between leaves ids there that name nothing, which readers skip)."""
        reply = await self._job_call("dlv_prune", partition, [token, lock_ms, limit, retention_ms])
        if text(reply[0]) == "LOCKED":
            return None
        pairs = reply[4:]
        if pairs:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for i in range(0, len(pairs), 2):
                        key = self.keys.endpoint_deliveries(text(pairs[i]))
                        pipe.lrem(key, 0, text(pairs[i + 1]))
                    await pipe.execute()
            except UNAVAILABLE as exc:
                raise unavailable(exc) from exc
            except rexc.RedisError as exc:
                raise StoreError(f"store error pruning recent lists: {exc}") from exc
        return PruneReply(pruned=int(reply[1]), more=bool(int(reply[2])), indexed=int(reply[3]))

    async def depth(self, partition: int) -> tuple[int, int]:
        """(scheduled, dead) deliveries of a partition."""
        k = self.keys.delivery(partition)
        return int(await self._cmd("zcard", k.due)), int(await self._cmd("zcard", k.dead))
