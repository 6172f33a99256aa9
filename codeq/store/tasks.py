"""Task transitions on one partition: create, claim, heartbeat, abandon, nack, result, cancel,
and the reads of tasks (``get``, ``get_many``, ``history``). Each is one script
(``codeq/store/lua/<name>.lua``); concurrent creates, claims and results of a partition share
calls (:mod:`codeq.store.merge`).

A script that refuses a transition answers with a structured reply (``{'NOT_OWNER'}``, ...),
turned here into :class:`NotFound` / :class:`Forbidden` / :class:`Conflict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from codeq.domain import Task, TaskEvent
from codeq.errors import CodeQError, Conflict, Forbidden, NotFound
from codeq.store.base import ScriptStore
from codeq.store.errors import StoreError
from codeq.store.merge import CallMerger
from codeq.store.protocol import (
    CreateItem,
    CreateReply,
    GetReply,
    IndexPage,
    IndexQuery,
    NackReply,
)
from codeq.store.records import decode_history, decode_task
from codeq.store.streams import text as _s

__all__ = ["TaskTransitions", "delays_arg"]


def delays_arg(delays_ms: Sequence[int]) -> str:
    """A backoff table (ms per attempt) as the scripts take it: ``"200,400,..."``."""
    if isinstance(delays_ms, tuple):
        return _joined_delays(delays_ms)
    return ",".join(str(int(d)) for d in delays_ms)


@lru_cache(maxsize=256)
def _joined_delays(delays_ms: tuple[int, ...]) -> str:
    return ",".join(str(int(d)) for d in delays_ms)


def _owner_error(reply: list[Any], task_id: str) -> CodeQError:
    code = _s(reply[0])
    if code == "NOT_FOUND":
        return NotFound(f"task {task_id} not found", task_id=task_id)
    if code == "NOT_OWNER":
        return Forbidden("not the lease holder of this task", code="not_owner", task_id=task_id)
    if code == "NOT_IN_PROGRESS":
        status = _s(reply[1]) if len(reply) > 1 else "not in progress"
        return Conflict(
            f"task is {status}, not IN_PROGRESS", code="not_in_progress", task_id=task_id
        )
    if code == "LEASE_MISMATCH":
        return Conflict(
            "leaseId does not match the current lease", code="lease_mismatch", task_id=task_id
        )
    if code == "LEASE_EXPIRED":
        return Conflict("the lease has expired", code="not_in_progress", task_id=task_id)
    if code == "NOT_CANCELLABLE":
        status = _s(reply[1]) if len(reply) > 1 else "not pending"
        return Conflict(
            f"task is {status}: only a PENDING task (ready or delayed) can be cancelled",
            code="not_cancellable",
            task_id=task_id,
        )
    return StoreError(f"unexpected script reply {code!r}")


#: one claim of a merged call: its queues, worker id and new lease id
_ClaimItem = tuple[tuple[str, ...], str, str]


@dataclass(frozen=True, slots=True)
class _ClaimAt:
    """What claims must share to be served by one claim script call (their queues need not:
    the call serves them in groups that name the same queues). The backoff table (for the
    leases the call's repair finds expired) is not among it: each claim brings one drawn at
    random, and the call uses its first claim's."""

    partition: int
    lease_ms: int
    repair_limit: int
    dlq_retention_ms: int
    delays: str = field(compare=False)


#: one result of result.lua: tenant, task id, worker id, lease id or "", status, result JSON,
#: error or "", retention ms
_ResultItem = tuple[str, str, str, str, str, bytes, str, int]


class TaskTransitions(ScriptStore):
    """The task transitions and reads of a store (:class:`codeq.store.protocol.Tasks`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # concurrent creates of a partition share a script call, gathered over two loop turns
        # (see codeq/store/merge.py)
        self._creates: CallMerger[tuple[int, int], CreateItem] = CallMerger(
            self._create_call, patience=1
        )
        self._results: CallMerger[int, _ResultItem] = CallMerger(self._result_call)
        self._claims: CallMerger[_ClaimAt, _ClaimItem] = CallMerger(self._claim_call)

    async def create(
        self, partition: int, items: Sequence[CreateItem], *, idempotency_ttl_ms: int
    ) -> list[CreateReply]:
        """Create ``items`` in ``partition``: one script call, shared with the creates other
        coroutines make in the same instant, cut in calls of at most ``MAX_SCRIPT_ITEMS``."""
        reply = await self._creates.submit((partition, idempotency_ttl_ms), items)
        out: list[CreateReply] = []
        for entry, item in zip(reply, items, strict=True):
            if not isinstance(entry, list):  # the tail the script appended to the item's head
                record = item.head + entry
                out.append(CreateReply(outcome="created", task=decode_task(record, item.payload)))
                continue
            code = _s(entry[0])
            if code == "DUP":
                out.append(CreateReply(outcome="replayed", task=decode_task(entry[1], entry[2])))
            elif code == "CONFLICT":
                out.append(CreateReply(outcome="conflict", existing_id=_s(entry[1])))
            else:
                raise StoreError(f"unexpected create reply {code!r}")
        return out

    async def _create_call(self, at: tuple[int, int], items: list[CreateItem]) -> list[Any]:
        """One create script call: the reply entries, one per item (see create.lua)."""
        partition, idempotency_ttl_ms = at
        args: list[Any] = [idempotency_ttl_ms, len(items)]
        extra: list[str] = []
        base = len(self.keys.partition(partition).all)
        for item in items:
            idx = 0
            if item.idempotency_key is not None:
                extra.append(self.keys.idempotency(partition, item.tenant, item.idempotency_key))
                idx = base + len(extra)
            args += [
                item.head,
                item.payload,
                "" if item.run_at_ms is None else item.run_at_ms,
                "" if item.delay_ms is None else item.delay_ms,
                idx,
                item.queue_meta,
                item.id,
                item.q,
                item.tenant,
                item.command,
                item.priority,
                item.payload_hash,
            ]
        reply: list[Any] = await self._run("create", partition, args, extra)
        return reply

    async def claim(
        self,
        partition: int,
        queues: Sequence[str],
        *,
        worker_id: str,
        lease_id: str,
        lease_ms: int,
        repair_limit: int,
        delays_ms: Sequence[int],
        dlq_retention_ms: int,
    ) -> Task | None:
        at = _ClaimAt(partition, lease_ms, repair_limit, dlq_retention_ms, delays_arg(delays_ms))
        (reply,) = await self._claims.submit(at, [(tuple(queues), worker_id, lease_id)])
        if _s(reply[0]) == "EMPTY":
            return None
        return decode_task(reply[1], reply[2])

    async def _claim_call(self, at: _ClaimAt, items: list[_ClaimItem]) -> list[Any]:
        """One claim script call: one reply per (queues, worker id, lease id), the claims
        grouped by their queues (see claim.lua), the replies in the items' order."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item[0], []).append(index)
        args: list[Any] = [at.lease_ms, at.repair_limit, at.delays, at.dlq_retention_ms]
        args.append(len(groups))
        order: list[int] = []
        for queues, indexes in groups.items():
            args += [len(queues), *queues, len(indexes)]
            for index in indexes:
                args += items[index][1:]
            order += indexes
        reply: list[Any] = await self._run("claim", at.partition, args)
        out: list[Any] = [None] * len(items)
        for position, index in enumerate(order):
            out[index] = reply[position]
        return out

    async def heartbeat(
        self,
        partition: int,
        tenant: str,
        task_id: str,
        *,
        worker_id: str,
        lease_id: str | None,
        extend_ms: int,
    ) -> Task:
        args = [tenant, task_id, worker_id, lease_id or "", extend_ms]
        reply = await self._run("heartbeat", partition, args)
        if _s(reply[0]) != "OK":
            raise _owner_error(reply, task_id)
        return decode_task(reply[1])

    async def abandon(
        self, partition: int, tenant: str, task_id: str, *, worker_id: str, lease_id: str | None
    ) -> Task:
        reply = await self._run("abandon", partition, [tenant, task_id, worker_id, lease_id or ""])
        if _s(reply[0]) != "OK":
            raise _owner_error(reply, task_id)
        return decode_task(reply[1])

    async def cancel(
        self, partition: int, tenant: str, task_id: str, *, retention_ms: int, reason: str | None
    ) -> Task:
        reply = await self._run("cancel", partition, [tenant, task_id, retention_ms, reason or ""])
        if _s(reply[0]) != "OK":
            raise _owner_error(reply, task_id)
        return decode_task(reply[1])

    async def nack(
        self,
        partition: int,
        tenant: str,
        task_id: str,
        *,
        worker_id: str,
        lease_id: str | None,
        delay_override_ms: int | None,
        reason: str | None,
        delays_ms: Sequence[int],
        dlq_retention_ms: int,
    ) -> NackReply:
        args = [
            tenant,
            task_id,
            worker_id,
            lease_id or "",
            "" if delay_override_ms is None else delay_override_ms,
            reason or "",
            delays_arg(delays_ms),
            dlq_retention_ms,
        ]
        reply = await self._run("nack", partition, args)
        code = _s(reply[0])
        if code == "REQUEUED":
            return NackReply(
                dead_lettered=False, delay_ms=int(reply[1]), task=decode_task(reply[2])
            )
        if code == "DLQ":
            return NackReply(dead_lettered=True, delay_ms=0, task=decode_task(reply[2]))
        raise _owner_error(reply, task_id)

    async def result(
        self,
        partition: int,
        tenant: str,
        task_id: str,
        *,
        worker_id: str,
        lease_id: str | None,
        status: str,
        result: bytes,
        error: str | None,
        retention_ms: int,
    ) -> Task:
        item = (
            tenant,
            task_id,
            worker_id,
            lease_id or "",
            status,
            result,
            error or "",
            retention_ms,
        )
        (reply,) = await self._results.submit(partition, [item])
        if _s(reply[0]) != "OK":
            raise _owner_error(reply, task_id)
        return decode_task(reply[1])

    async def _result_call(self, partition: int, items: list[_ResultItem]) -> list[Any]:
        """One result script call: one reply per item (see result.lua)."""
        args: list[Any] = [len(items)]
        for item in items:
            args += item
        reply: list[Any] = await self._run("result", partition, args)
        return reply

    async def get(
        self,
        partition: int,
        tenant: str,
        task_id: str,
        *,
        with_payload: bool = True,
        with_result: bool = False,
    ) -> GetReply:
        args = [tenant, task_id, "1" if with_payload else "0", "1" if with_result else "0"]
        reply = await self._run("get", partition, args)
        if _s(reply[0]) != "OK":
            raise NotFound(f"task {task_id} not found", task_id=task_id)
        result = reply[3] or None
        return GetReply(task=decode_task(reply[1], reply[2]), result=result)

    async def history(self, partition: int, tenant: str, task_id: str) -> tuple[TaskEvent, ...]:
        reply = await self._run("get", partition, [tenant, task_id, "0", "0"])
        if _s(reply[0]) != "OK":
            raise NotFound(f"task {task_id} not found", task_id=task_id)
        return decode_history(reply[1])

    async def get_many(
        self, partition: int, wanted: Sequence[tuple[str, str, bool]]
    ) -> list[GetReply | None]:
        """Tasks (without payloads) of one partition, in one call: ``wanted`` holds (tenant,
        task id, with result); None where a task is absent or another tenant's."""
        if not wanted:
            return []
        args: list[str] = []
        for tenant, task_id, with_result in wanted:
            args.extend((tenant, task_id, "1" if with_result else "0"))
        reply = await self._run("get_many", partition, args)
        return [
            GetReply(task=decode_task(reply[i]), result=reply[i + 1] or None) if reply[i] else None
            for i in range(0, len(reply), 2)
        ]

    async def list_tasks(
        self, partition: int, query: IndexQuery, *, idempotency_key: str | None = None
    ) -> IndexPage:
        """One page of a tenant's tasks in one partition, newest first (``list_tasks.lua``)."""
        args = [
            query.tenant,
            query.index,
            ",".join(query.prefixes),
            "" if query.created_from_ms is None else query.created_from_ms,
            "" if query.created_before_ms is None else query.created_before_ms,
            query.after or "",
            query.size,
            query.bound,
            query.codes,
            "" if query.priority is None else query.priority,
            query.queue,
        ]
        extra = []
        if idempotency_key is not None:
            extra.append(self.keys.idempotency(partition, query.tenant, idempotency_key))
        reply = await self._run("list_tasks", partition, args, extra)
        tasks = tuple(decode_task(reply[i], reply[i + 1]) for i in range(1, len(reply), 2))
        return IndexPage(tasks=tasks, reached=_s(reply[0]) or None)
