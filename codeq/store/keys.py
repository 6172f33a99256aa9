"""The key schema: the only place that builds a key name.

Every key carries the hash tag of its partition, ``<prefix>:{<p>}:...``, so all keys a script
touches land in one cluster slot (one KVRocks node, a KVRocks cluster or Redis Cluster alike).

Tenants, commands and idempotency keys enter key names only through :func:`escape`, which is
injective and never produces ``{``, ``}``, ``:``, ``/`` or ``!``. A queue segment is
``escape(tenant) + "/" + escape(command.lower())``; members of the lex-ordered zsets put ``!``
after it, a byte smaller than every byte :func:`escape` emits, so a lex range of one queue never
reaches into another whose name merely starts the same way.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["DeliveryKeys", "KeySchema", "PartitionKeys", "escape", "queue_segment"]

_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9_.\-]*")
_PREFIX_OK = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def escape(text: str) -> str:
    """Percent-escape every byte outside ``[A-Za-z0-9_.-]`` (``%`` included): injective."""
    if _ALL_SAFE.fullmatch(text):  # the usual case, one regex call (this runs per request)
        return text
    out: list[str] = []
    for ch in text:
        if _SAFE.match(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def queue_segment(tenant: str, command: str) -> str:
    """The ``<q>`` of a (tenant, command) pair; routing is case-insensitive on the command."""
    return f"{escape(tenant)}/{escape(command.lower())}"


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """Every fixed key of one partition, in the order the Lua scripts expect them in KEYS."""

    partition: int
    tasks: str
    payloads: str
    results: str
    ready: str
    delayed: str
    leased: str
    dlq: str
    queues: str
    qstats: str
    events: str
    expiry: str
    seq: str
    sweep_lock: str
    by_status: str
    by_command: str
    #: the outcome totals' once-a-minute snapshots (sweep.lua writes, stats.lua reads; not in
    #: ``all``: those two take it as KEYS[16])
    rates: str

    @property
    def all(self) -> tuple[str, ...]:
        """KEYS[1..15] of every task script (see codeq/store/lua/lib.lua)."""
        return (
            self.tasks,
            self.payloads,
            self.results,
            self.ready,
            self.delayed,
            self.leased,
            self.dlq,
            self.queues,
            self.qstats,
            self.events,
            self.expiry,
            self.seq,
            self.sweep_lock,
            self.by_status,
            self.by_command,
        )


@dataclass(frozen=True, slots=True)
class DeliveryKeys:
    """The fixed keys of one partition's webhook deliveries (spec 03), in KEYS order of the
    delivery scripts (codeq/store/lua/dlv_*.lua, where ``dlv_lib.lua`` says what each holds).
    ``lock`` is the partition's sweep lock (:attr:`PartitionKeys.sweep_lock`): the sweeper's
    pruning of deliveries takes it as its task steps do."""

    partition: int
    events: str
    records: str
    due: str
    dead: str
    poison: str
    tasks: str
    results: str
    by_task: str
    index: str
    counts: str
    stats: str
    ended: str
    lock: str

    @property
    def all(self) -> tuple[str, ...]:
        return (
            self.events,
            self.records,
            self.due,
            self.dead,
            self.poison,
            self.tasks,
            self.results,
            self.by_task,
            self.index,
            self.counts,
            self.stats,
            self.ended,
            self.lock,
        )


class KeySchema:
    """Builds key names for one ``keyPrefix`` and partition count."""

    def __init__(self, prefix: str = "codeq", partitions: int = 1) -> None:
        if not _PREFIX_OK.match(prefix):
            raise ValueError(f"keyPrefix {prefix!r} must be 1-64 chars of [A-Za-z0-9_.-]")
        if not 1 <= partitions <= 16384:
            raise ValueError("partitions must be between 1 and 16384")
        self.prefix = prefix
        self.partitions = partitions
        self._partition = lru_cache(maxsize=None)(self._build)
        self._delivery = lru_cache(maxsize=None)(self._build_delivery)

    def tag(self, partition: int) -> str:
        return f"{self.prefix}:{{{partition}}}"

    def _build(self, partition: int) -> PartitionKeys:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range")
        t = self.tag(partition)
        return PartitionKeys(
            partition=partition,
            tasks=f"{t}:tasks",
            payloads=f"{t}:payloads",
            results=f"{t}:results",
            ready=f"{t}:ready",
            delayed=f"{t}:delayed",
            leased=f"{t}:leased",
            dlq=f"{t}:dlq",
            queues=f"{t}:queues",
            qstats=f"{t}:qstats",
            events=f"{t}:events",
            expiry=f"{t}:expiry",
            seq=f"{t}:seq",
            sweep_lock=f"{t}:lock:sweep",
            by_status=f"{t}:ix:status",
            by_command=f"{t}:ix:command",
            rates=f"{t}:rates",
        )

    def partition(self, partition: int) -> PartitionKeys:
        return self._partition(partition)

    def delivery(self, partition: int) -> DeliveryKeys:
        return self._delivery(partition)

    def _build_delivery(self, partition: int) -> DeliveryKeys:
        k = self.partition(partition)
        t = k.tasks.rsplit(":", 1)[0]
        return DeliveryKeys(
            partition=partition,
            events=f"{t}:events",
            records=f"{t}:deliveries",
            due=f"{t}:dlv:due",
            dead=f"{t}:dlv:dead",
            poison=f"{t}:dlv:poison",
            tasks=f"{t}:tasks",
            results=f"{t}:results",
            by_task=f"{t}:dlv:task",
            index=f"{t}:dlv:ix",
            counts=f"{t}:dlv:counts",
            stats=f"{t}:dlv:stats",
            ended=f"{t}:dlv:ended",
            lock=k.sweep_lock,
        )

    def replay_jobs(self, partition: int) -> tuple[str, str, str, str]:
        """One partition's part of the replay jobs (issue 18 item 3), KEYS[14..17] of the
        ``dlv_job_*.lua`` scripts and of ``dlv_prune.lua`` (after :attr:`DeliveryKeys.all`):
        the records hash (job id -> this partition's part), the tenants' recent jobs (zset, lex
        "<T>!<createdAt:13>!<id>"), the runnable parts (zset, job id by the end of its lease;
        0 = not leased) and the ended parts (zset, job id by when it ended: retention)."""
        t = self.tag(partition)
        return f"{t}:dlv:jobs", f"{t}:dlv:jobs:recent", f"{t}:dlv:jobs:run", f"{t}:dlv:jobs:ended"

    def subscriptions(self, tenant: str) -> tuple[str, str, str]:
        """Worker availability subscriptions (spec 03), under a tag of their own: the records
        hash, the expiry zset, and the tenant's index set — KEYS[1..3] of ``sub_*.lua``."""
        t = f"{self.prefix}:{{subs}}"
        return f"{t}:records", f"{t}:expiry", f"{t}:tenant:{escape(tenant)}"

    def endpoints(self, tenant: str) -> tuple[str, str]:
        """Event-subscription endpoints (spec 03), under a tag of their own: the records hash
        and the tenant's index set — KEYS[1..2] of ``ep_*.lua``."""
        t = f"{self.prefix}:{{hooks}}"
        return f"{t}:records", f"{t}:tenant:{escape(tenant)}"

    def endpoint_deliveries(self, endpoint_id: str) -> str:
        """The newest delivery ids of one endpoint (a capped list, an index only)."""
        return f"{self.prefix}:{{hooks}}:recent:{escape(endpoint_id)}"

    def hook_events(self) -> tuple[str, str]:
        """The ``{hooks}`` tag's event stream (``endpoint.disabled``, ``endpoint.enabled``:
        appended by ``ep_mark.lua`` and ``ep_patch.lua``, their KEYS[3]; read by the deliverers'
        ``endpoints`` group) and the list of its entries set aside — KEYS[1..2] of
        ``ep_ack.lua``."""
        t = f"{self.prefix}:{{hooks}}"
        return f"{t}:events", f"{t}:events:poison"

    def hook_consumer_alive(self, group: str, consumer: str) -> str:
        """Liveness key of one consumer of a group on the ``{hooks}`` stream."""
        return f"{self.prefix}:{{hooks}}:alive:{escape(group)}:{escape(consumer)}"

    def consumer_alive(self, partition: int, group: str, consumer: str) -> str:
        """Liveness key of one consumer of a group (TTL ``consumerTtlSeconds``)."""
        return f"{self.tag(partition)}:alive:{escape(group)}:{escape(consumer)}"

    def rate_limit(self, scope: str, tenant: str, subject: str) -> str:
        """The token bucket of one caller (spec 04): scope + tenant + subject, never a token.
        The whole identity is the hash tag, so buckets spread over a cluster's slots."""
        return f"{self.prefix}:{{rl:{escape(scope)}:{escape(tenant)}:{escape(subject)}}}"

    def all_partitions(self) -> list[PartitionKeys]:
        return [self.partition(p) for p in range(self.partitions)]

    def partition_of(self, task_id: str) -> int:
        """A task's partition: a pure function of its id."""
        if self.partitions == 1:
            return 0
        return zlib.crc32(task_id.encode()) % self.partitions

    def idempotency_partition(self, tenant: str, key: str) -> int:
        if self.partitions == 1:
            return 0
        return zlib.crc32(f"{tenant}\x00{key}".encode()) % self.partitions

    def idempotency(self, partition: int, tenant: str, key: str) -> str:
        return f"{self.tag(partition)}:idem:{escape(tenant)}:{escape(key)}"
