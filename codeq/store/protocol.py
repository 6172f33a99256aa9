"""The store as its consumers see it: one protocol per concept, each naming what its
consumers call, and the replies they get (msgspec types).

=================  ====================================================================
protocol           consumers
=================  ====================================================================
``Store``          the engine (``codeq/engine.py``): task transitions, reads, upkeep
``TaskReads``      the deliverers: the tasks of a batch of events in one call
``EventStreams``   the event tail that wakes long polls (``codeq/events.py``)
``ConsumerGroups`` the deliverers' consumer-group loop, its recovery and liveness
``Deliveries``     the deliverers (schedule, outcomes) and the delivery routes
``Endpoints``      the endpoint routes and the deliverers
``Subscriptions``  the subscription routes and the deliverers' notifications
``RateBuckets``    the rate guard (``codeq/rate_limits.py``)
``Meters``         ``/metrics`` (``gateway/metrics.py``)
``Backend``        what :func:`codeq.store.open_store` returns: every part above, and the
                   store's life cycle (check, load scripts, ping, close)
=================  ====================================================================

Each method is one round trip (most are one script call). Partition choice, ids, defaults and
backoff tables are the callers' business; decoding and error translation are the store's: a
method raises only :class:`~codeq.errors.CodeQError` (``StoreUnavailable`` when the server is
away). ``tests/test_store_contract.py`` runs every protocol against every backend; only
:mod:`codeq.store.factory` names the classes that implement them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec

from codeq.domain import QueueStats, SweepReport, Task, TaskEvent
from codeq.store.keys import KeySchema
from codeq.store.streams import StreamEntry

__all__ = [
    "Backend",
    "CommandDepths",
    "ConsumerGroups",
    "CreateItem",
    "CreateReply",
    "Deliveries",
    "DeliveryIndexPage",
    "DeliveryQuery",
    "EndpointBuckets",
    "Endpoints",
    "EventStreams",
    "GetReply",
    "GroupLag",
    "HookEvents",
    "IndexPage",
    "IndexQuery",
    "JobStep",
    "Meters",
    "NackReply",
    "PartitionGauges",
    "PruneReply",
    "PurgeReply",
    "RateBuckets",
    "RateDecision",
    "StatsBucket",
    "Store",
    "Subscriptions",
    "TaskReads",
    "Tasks",
]


class CreateItem(msgspec.Struct, frozen=True, kw_only=True):
    """One task to create. ``head`` is the new record's JSON without its closing brace (the
    script appends what only the store knows, see codeq/store/lua/create.lua); ``id``, ``q``,
    ``tenant``, ``command``, ``priority`` (0-9) and ``payload_hash`` repeat the head's fields
    the script acts on, so it never decodes JSON."""

    head: bytes
    payload: str
    queue_meta: bytes
    id: str
    q: str
    command: str
    priority: int
    tenant: str
    payload_hash: str = ""
    run_at_ms: int | None = None
    delay_ms: int | None = None
    idempotency_key: str | None = None  # raw key; the store names the key itself


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


class IndexQuery(msgspec.Struct, frozen=True, kw_only=True):
    """One partition's part of a task listing (``list_tasks.lua``): which index ranges to
    merge, newest first, and what a task found there must also match.

    ``index`` is ``"status"`` (``prefixes``: ``"<escaped tenant>!<S>"`` for each listing
    status S) or ``"command"`` (``prefixes``: the one queue segment). ``after`` is the position
    ``"<createdAt:13>!<id>"`` of the previous page's last task. ``"idem"``: the one task an
    idempotency key names (KEYS[16]), with ``prefixes`` the queue segment to match, if any.
    ``codes`` (listing statuses), ``queue`` (a queue segment, with the status index) and
    ``priority`` are checked on the records: such a page looks at no more than ``bound`` index
    entries."""

    tenant: str
    index: str
    prefixes: tuple[str, ...]
    size: int
    bound: int
    created_from_ms: int | None = None
    created_before_ms: int | None = None
    after: str | None = None
    codes: str = ""
    queue: str = ""
    priority: int | None = None


class IndexPage(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks of one partition, newest first, with their payloads; ``reached``: the position of
    the last index entry looked at when more may follow (every newer one was looked at), None
    when the range ended."""

    tasks: tuple[Task, ...]
    reached: str | None = None


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


class RateDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One take of a token: ``allowed``, or refused with the wait until the next whole token."""

    allowed: bool
    retry_after_ms: int = 0
    remaining: int = 0


class Store(Protocol):
    """What the engine needs from a store: the task transitions, reads and upkeep."""

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

    async def cancel(
        self, partition: int, tenant: str, task_id: str, *, retention_ms: int, reason: str | None
    ) -> Task:
        """A PENDING task (ready or delayed) becomes CANCELLED; again on a cancelled one is its
        record. NotFound (absent or another tenant's), Conflict ``not_cancellable``."""
        ...

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

    async def history(self, partition: int, tenant: str, task_id: str) -> tuple[TaskEvent, ...]:
        """The task's own event history, oldest first (NotFound: absent or another tenant's)."""
        ...

    async def requeue_dlq(
        self, partition: int, tenant: str, queue: str, ids: Sequence[str], *, limit: int
    ) -> list[str]: ...

    async def dlq_page(
        self, partition: int, queue: str, *, cursor: str | None, size: int
    ) -> tuple[list[Task], str | None]: ...

    async def list_tasks(
        self, partition: int, query: IndexQuery, *, idempotency_key: str | None = None
    ) -> IndexPage:
        """One page of a tenant's tasks in one partition, from the listing indexes; with
        ``idempotency_key`` (``query.index`` ``"idem"``), the task the key names, if any."""
        ...

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


class TaskReads(Protocol):
    """What the deliverers read of tasks: those of a batch of events, in one call."""

    async def get_many(
        self, partition: int, wanted: Sequence[tuple[str, str, bool]]
    ) -> list[GetReply | None]:
        """(tenant, task id, with result) → the task without its payload (and its result),
        None where it is absent or another tenant's."""
        ...


class Tasks(Store, TaskReads, Protocol):
    """The task side of a store: the engine's part and the deliverers'."""


class EventStreams(Protocol):
    """The partition streams read without a consumer group (the long-poll tail)."""

    @property
    def keys(self) -> KeySchema: ...

    async def stream_end(self, key: str) -> str:
        """The id of the stream's newest entry ("0-0" when empty)."""
        ...

    async def read_stream(
        self, key: str, after: str, *, block_ms: int, count: int
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries after ``after``, waiting up to ``block_ms`` for one; [] when none came."""
        ...


class ConsumerGroups(Protocol):
    """Consumer groups on the partition streams, as a deliverer reads them: its batches, what
    it and dead consumers hold unacknowledged, and the liveness of consumers."""

    async def ensure_group(self, partition: int, group: str, start: str = "0") -> bool:
        """Create ``group`` (and the stream); False when it existed."""
        ...

    async def group_exists(self, partition: int, group: str) -> bool: ...

    async def read_group(
        self, partition: int, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[StreamEntry]:
        """New entries for ``consumer``, waiting up to ``block_ms``; [] when none came or the
        group is missing (``group_exists`` tells)."""
        ...

    async def pending_of(
        self, partition: int, group: str, consumer: str, *, count: int = 100
    ) -> list[tuple[str, int]]:
        """(entry id, times received) of the entries ``consumer`` holds unacknowledged."""
        ...

    async def consumers(self, partition: int, group: str) -> list[tuple[str, int]]:
        """(name, pending count as the server reports it) of the group's consumers."""
        ...

    async def take_over(
        self, partition: int, group: str, consumer: str, ids: Sequence[str]
    ) -> list[StreamEntry]:
        """The entries ``ids``, now held by ``consumer`` (their owner is known dead)."""
        ...

    async def forget_consumer(self, partition: int, group: str, consumer: str) -> None: ...

    async def poison(
        self, partition: int, group: str, entry_id: str, receives: int,
        reason: str = "received too many times",
    ) -> None:  # fmt: skip
        """Set an entry aside (a dead-letter record with ``reason``) and acknowledge it."""
        ...

    async def heartbeat(self, partition: int, group: str, consumer: str, ttl_s: int) -> None:
        """``consumer`` is alive for ``ttl_s`` more seconds."""
        ...

    async def release(self, partition: int, group: str, consumer: str) -> None:
        """``consumer`` stops: dead to the others from now on."""
        ...

    async def alive(self, partition: int, group: str, consumer: str) -> bool: ...


class HookEvents(ConsumerGroups, Protocol):
    """Consumer groups on the ``{hooks}`` stream (``partition`` is ignored), and the
    acknowledgement of its entries once their deliveries are written."""

    async def acknowledge(
        self, group: str, entry_ids: Sequence[str], *,
        set_aside: Sequence[tuple[str, str]] = (), floor_ms: int,
    ) -> None:  # fmt: skip
        """Acknowledge ``entry_ids`` and ``set_aside`` (entry id, reason: each gets a
        dead-letter record) in one step, and trim the stream: the entries older than
        ``floor_ms`` (ms) that every group has passed go."""
        ...


class DeliveryQuery(msgspec.Struct, frozen=True, kw_only=True):
    """One partition's part of a delivery search (``dlv_search.lua``): the tenant's deliveries
    that match every filter given, newest first, ``size`` at most, after position ``after``
    (``"<createdAt:13>!<id>"`` of the previous page's last one). ``statuses`` are record
    statuses (``pending``, ``retrying``, ``succeeded``, ``dead``, ``gone``; empty: any).
    Creation times: from ``created_from_ms`` (inclusive) to ``created_before_ms`` (exclusive).
    The store reads the index range that fits the filters best; a filter that range does not
    cover is checked on the records, looking at no more than ``bound`` index entries."""

    tenant: str
    size: int
    bound: int
    statuses: tuple[str, ...] = ()
    endpoint_id: str | None = None
    event_type: str | None = None
    task_id: str | None = None
    created_from_ms: int | None = None
    created_before_ms: int | None = None
    after: str | None = None


class DeliveryIndexPage(msgspec.Struct, frozen=True, kw_only=True):
    """Delivery records of one partition, newest first; ``reached``: the position of the last
    index entry looked at when more may follow (every newer one was looked at), None when the
    ranges ended."""

    records: tuple[bytes, ...]
    reached: str | None = None


class JobStep(msgspec.Struct, frozen=True, kw_only=True):
    """What one step of a replay job's part did (``dlv_job_step.lua``): ``outcome`` 'OK', 'LOST'
    (the lease ran out or the cursor moved: nothing done), or the status the part had ended in
    (cancelled, done); deliveries ``replayed`` and ``skipped``; the part's ``status`` after."""

    outcome: str
    replayed: int
    skipped: int
    status: str


class StatsBucket(msgspec.Struct, frozen=True, kw_only=True):
    """One minute's or hour's attempts to an endpoint in one partition: ``epoch`` the minute
    (hour) since 1970, attempts ``ok`` (2xx) and ``failed``, and ``latency[i]`` the attempts of
    at most 2^(i/4) ms (above the bucket before; the last bucket: everything slower)."""

    epoch: int
    ok: int
    failed: int
    latency: tuple[int, ...]


class EndpointBuckets(msgspec.Struct, frozen=True, kw_only=True):
    """What one partition holds of an endpoint's statistics: its ring of minute buckets (the
    last hour) and of hour buckets (the last day), stale buckets included (their ``epoch``
    says so)."""

    minutes: tuple[StatsBucket, ...] = ()
    hours: tuple[StatsBucket, ...] = ()


class PruneReply(msgspec.Struct, frozen=True, kw_only=True):
    """One bounded retention step: deliveries pruned, whether more may follow, and records
    written before the listing index that this step indexed."""

    pruned: int
    more: bool
    indexed: int = 0


class Deliveries(Protocol):
    """The durable delivery schedule (records as JSON bytes, see ``deliverers/records.py``),
    its listing index, counters, endpoint statistics and retention."""

    async def enqueue(
        self, partition: int, group: str, entry_ids: Sequence[str], lease_ms: int,
        deliveries: Sequence[tuple[str, bytes]], *,
        quarantined: Sequence[tuple[str, str]] = (),
    ) -> list[str]:  # fmt: skip
        """Write ``deliveries`` (id, record), leased for their first attempt, dead-letter
        records of the ``quarantined`` (entry id, reason) and acknowledge ``entry_ids``, in one
        step; the ids of the deliveries that were new."""
        ...

    async def claim_due(self, partition: int, *, lease_ms: int, limit: int) -> list[bytes]:
        """Records of due deliveries, each leased for ``lease_ms``."""
        ...

    async def outcomes(
        self, partition: int, items: Sequence[tuple[str, str, int, bytes]], kept: int
    ) -> list[tuple[str, int]]:
        """Record attempts (delivery id, outcome, delay ms, attempt JSON): (new status,
        attempts) each, ("MISSING", 0) for one that is gone."""
        ...

    async def defer(self, partition: int, delivery_id: str, *, delay_ms: int) -> bool:
        """Put a leased delivery's attempt off without counting one; False when it is gone."""
        ...

    async def replay(
        self, partition: int, *, tenant: str | None, ids: Sequence[str] = (), limit: int = 100
    ) -> list[str]:
        """Make dead (or the named) deliveries of ``tenant`` (None: any) due now."""
        ...

    async def get(self, partition: int, delivery_id: str) -> bytes | None: ...

    async def of_task(
        self, partition: int, tenant: str, task_id: str, *, limit: int
    ) -> list[bytes] | None:
        """The deliveries a task caused (records), at most ``limit``, in one call; None when
        the task is absent or another tenant's."""
        ...

    async def dead_page(self, partition: int, *, limit: int) -> list[bytes]:
        """The oldest dead deliveries of a partition."""
        ...

    async def search(self, partition: int, query: DeliveryQuery) -> DeliveryIndexPage:
        """One page of a tenant's deliveries in one partition, from the listing index."""
        ...

    async def create_job(self, partition: int, job_id: str, tenant: str, part: bytes) -> bool:
        """Write this partition's part of a replay job, queued; False when it exists."""
        ...

    async def lease_job(self, partition: int, owner: str, *, lease_ms: int) -> bytes | None:
        """Lease a queued part of a replay job, or one whose lease ran out: its JSON."""
        ...

    async def job_step(
        self, partition: int, job_id: str, owner: str, *, lease_ms: int, cursor: str,
        reached: str | None, statuses: Sequence[str], ids: Sequence[str],
    ) -> JobStep:  # fmt: skip
        """Replay ``ids`` (a search page read from ``cursor``) still in ``statuses`` and move
        the part's cursor to ``reached`` (None: done), atomically, under the owner's lease."""
        ...

    async def cancel_job(self, partition: int, job_id: str, tenant: str) -> str:
        """Cancel the part: 'cancelled', the status it had ended in, or 'missing'."""
        ...

    async def job(self, partition: int, job_id: str) -> bytes | None:
        """This partition's part of a replay job."""
        ...

    async def recent_jobs(self, partition: int, tenant: str, *, limit: int) -> list[bytes]:
        """The tenant's newest replay jobs' parts in this partition, newest first."""
        ...

    async def counts(
        self, partition: int, tenant: str, *, endpoint_id: str | None = None
    ) -> dict[str, int]:
        """How many deliveries of the tenant (of one endpoint) the partition holds, by status
        (every status, 0 included): counters the scripts keep, never a count of a range."""
        ...

    async def endpoint_buckets(self, partition: int, endpoint_id: str) -> EndpointBuckets:
        """The partition's statistics buckets of one endpoint (kept by ``dlv_outcome``)."""
        ...

    async def prune(
        self, partition: int, *, token: str, lock_ms: int, limit: int, retention_ms: int
    ) -> PruneReply | None:
        """One bounded retention step under the partition's sweep lock: deliveries that ended
        more than ``retention_ms`` ago go, with every index entry naming them; None when
        another process holds the lock."""
        ...


class Endpoints(Protocol):
    """Event-subscription endpoints of a tenant (records as JSON bytes)."""

    async def create(self, endpoint_id: str, tenant: str, record: bytes) -> None: ...

    async def patch(
        self, endpoint_id: str, tenant: str, changes: Mapping[str, Any]
    ) -> bytes | None:
        """Set the named fields; the record after, None when there is none."""
        ...

    async def rotate(
        self, endpoint_id: str, tenant: str, new_secret: str, grace_ms: int
    ) -> int | None:
        """A new current secret; the previous one's expiry (ms), None when unknown."""
        ...

    async def delete(self, endpoint_id: str, tenant: str) -> bool: ...

    async def all_of(self, tenant: str) -> list[bytes]: ...

    async def mark(
        self, endpoint_id: str, tenant: str, outcome: str, disable_after_ms: int
    ) -> None:
        """Note an attempt's outcome (``ok``, ``failed``, ``gone``): failing long enough, or
        gone, disables the endpoint."""
        ...

    async def remember(self, endpoint_id: str, delivery_id: str, keep: int = 100) -> None:
        """Index a delivery under its endpoint (newest first)."""
        ...

    async def recent(self, endpoint_id: str, limit: int) -> list[str]: ...


class Subscriptions(Protocol):
    """Worker availability subscriptions of a tenant (records as JSON bytes)."""

    async def put(self, sub_id: str, tenant: str, record: bytes, ttl_ms: int) -> int | None:
        """Create (``record``) or renew (``b""``); the new expiry (ms), None when unknown."""
        ...

    async def delete(self, sub_id: str, tenant: str) -> bool: ...

    async def live(self, tenant: str) -> list[bytes]: ...

    async def get(self, sub_id: str, tenant: str) -> bytes | None:
        """One subscription of ``tenant`` by id (its record, one read), None when unknown or
        another tenant's."""
        ...

    async def pick(self, tenant: str, command: str, bucket: int) -> list[bytes]:
        """The subscriptions to notify that ``command`` has work, stamped as notified."""
        ...


class RateBuckets(Protocol):
    """The rate limits' token buckets, shared by every process (refilled on the server's
    clock)."""

    async def take(
        self, scope: str, tenant: str, subject: str, *, requests_per_minute: int, burst: int
    ) -> RateDecision:
        """Take one token from the bucket of (scope, tenant, subject)."""
        ...


class Meters(Protocol):
    """What ``/metrics`` reads from the store at scrape time."""

    @property
    def keys(self) -> KeySchema: ...

    async def gauges(self, partition: int) -> PartitionGauges: ...

    async def active_subscriptions(self, now_ms: int) -> int:
        """Worker subscriptions of every tenant not expired at ``now_ms``."""
        ...


class Backend(Protocol):
    """One store, handing each consumer its part (:func:`codeq.store.open_store`)."""

    @property
    def keys(self) -> KeySchema: ...

    @property
    def address(self) -> str:
        """Where the store is, for messages (never a password)."""
        ...

    @property
    def tasks(self) -> Tasks: ...

    @property
    def events(self) -> EventStreams: ...

    @property
    def groups(self) -> ConsumerGroups: ...

    @property
    def hook_events(self) -> HookEvents: ...

    @property
    def deliveries(self) -> Deliveries: ...

    @property
    def endpoints(self) -> Endpoints: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def rate_buckets(self) -> RateBuckets: ...

    @property
    def meters(self) -> Meters: ...

    async def check(self) -> None:
        """A store these settings can use (``StoreHandshakeError`` names the setting to
        change), reachable (``StoreUnavailable`` otherwise)."""
        ...

    async def load_scripts(self) -> None:
        """Load every script ahead of use (optional: calls load them when missing)."""
        ...

    async def list_waiting_apart(self, *, if_empty: bool = False) -> list[bool] | None:
        """Switch the store to listing delayed tasks apart (codeq.store.upkeep)."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
