"""The store seen by the engine: coarse, intention-named operations on one partition.

Each method is one script call (one round trip). Partition choice, ids, defaults and backoff
tables are the engine's business; decoding and error translation are the store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from codeq.domain import QueueStats, SweepReport, Task
from codeq.store.keys import KeySchema

__all__ = [
    "CommandDepths",
    "CreateItem",
    "CreateReply",
    "GetReply",
    "GroupLag",
    "NackReply",
    "PartitionGauges",
    "PurgeReply",
    "Store",
]


class CreateItem(msgspec.Struct, frozen=True, kw_only=True):
    record: bytes  # JSON of the new record (see codeq/store/lua/create.lua)
    payload: str
    queue_meta: bytes
    run_at_ms: int | None = None
    delay_ms: int | None = None
    idempotency_key: str | None = None  # raw key; the store names the key itself
    tenant: str = ""


class CreateReply(msgspec.Struct, frozen=True, kw_only=True):
    """One item's outcome: ``created``, ``replayed`` (idempotent repeat) or ``conflict``."""

    outcome: str
    task: Task | None = None
    existing_id: str | None = None


class NackReply(msgspec.Struct, frozen=True, kw_only=True):
    dead_lettered: bool
    delay_ms: int
    task: Task


class PurgeReply(msgspec.Struct, frozen=True, kw_only=True):
    """One bounded purge step: how many tasks went, how many expiry entries were looked at,
    whether more may follow, and the last entry looked at (score, member) to go on after."""

    purged: int
    looked: int
    more: bool
    last: tuple[int, str] | None = None


class GetReply(msgspec.Struct, frozen=True, kw_only=True):
    task: Task
    result: bytes | None = None


class CommandDepths(msgspec.Struct, frozen=True, kw_only=True):
    """Depths of every queue of one command (all tenants), in one partition."""

    command: str
    ready: int = 0
    delayed: int = 0
    in_progress: int = 0
    dlq: int = 0


class GroupLag(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer group on one partition stream: entries not yet read (``lag``, ``None`` when
    the server cannot tell) and entries read but not acknowledged (``pending``)."""

    group: str
    lag: int | None
    pending: int


class PartitionGauges(msgspec.Struct, frozen=True, kw_only=True):
    """What ``/metrics`` reads from one partition (``gauges.lua``, one call)."""

    scheduled_deliveries: int
    dead_deliveries: int
    groups: tuple[GroupLag, ...] = ()
    commands: tuple[CommandDepths, ...] = ()


class Store(Protocol):
    """What the engine needs from a store. Implemented by :class:`RedisStore`."""

    keys: KeySchema

    async def create(
        self, partition: int, items: Sequence[CreateItem], *, idempotency_ttl_ms: int
    ) -> list[CreateReply]: ...

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
    ) -> Task | None: ...

    async def heartbeat(
        self,
        partition: int,
        tenant: str,
        task_id: str,
        *,
        worker_id: str,
        lease_id: str | None,
        extend_ms: int,
    ) -> Task: ...

    async def abandon(
        self, partition: int, tenant: str, task_id: str, *, worker_id: str, lease_id: str | None
    ) -> Task: ...

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
    ) -> NackReply: ...

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
    ) -> Task: ...

    async def get(
        self,
        partition: int,
        tenant: str,
        task_id: str,
        *,
        with_payload: bool = True,
        with_result: bool = False,
    ) -> GetReply: ...

    async def requeue_dlq(
        self, partition: int, tenant: str, queue: str, ids: Sequence[str], *, limit: int
    ) -> list[str]: ...

    async def dlq_page(
        self, partition: int, queue: str, *, cursor: str | None, size: int
    ) -> tuple[list[Task], str | None]: ...

    async def stats(
        self, partition: int, *, tenant: str | None = None, queues: Sequence[str] = ()
    ) -> list[QueueStats]: ...

    async def purge(
        self,
        partition: int,
        *,
        before_ms: int | None,
        limit: int,
        tenant: str | None = None,
        after: tuple[int, str] | None = None,
    ) -> PurgeReply: ...

    async def sweep(
        self,
        partition: int,
        *,
        token: str,
        lock_ms: int,
        limit: int,
        delays_ms: Sequence[int],
        dlq_retention_ms: int,
    ) -> SweepReport | None: ...

    async def trim_events(self, partition: int, *, floor_ms: int) -> int: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
