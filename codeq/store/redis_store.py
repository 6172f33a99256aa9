"""The store on Redis, KVRocks or Redis Cluster (redis-py asyncio), and on the embedded
in-memory emulation: every operation is one ``EVALSHA`` of a script in ``codeq/store/lua``.

redis-py errors are translated here: connection trouble becomes :class:`StoreUnavailable`,
script replies that refuse a transition become :class:`NotFound` / :class:`Forbidden` /
:class:`Conflict`. Nothing above this module sees a redis exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from codeq.domain import QueueStats, SweepReport, Task
from codeq.errors import CodeQError, Conflict, Forbidden, NotFound, StoreUnavailable
from codeq.store.connection import HiredisPackConnection, sound
from codeq.store.handshake import check_handshake
from codeq.store.keys import KeySchema, escape
from codeq.store.merge import CallMerger
from codeq.store.protocol import (
    CommandDepths,
    CreateItem,
    CreateReply,
    GetReply,
    GroupLag,
    NackReply,
    PartitionGauges,
    PurgeReply,
)
from codeq.store.records import decode_task
from codeq.store.scripts import Script, load_scripts
from codeq.store.streams import text as _s

__all__ = ["RedisStore", "StoreError"]

log = logging.getLogger("codeq.store")

_UNAVAILABLE = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    rexc.TryAgainError,
    rexc.ClusterDownError,
    rexc.RedisClusterException,  # the cluster client's own: no node reachable, slots moving
    OSError,
)


class StoreError(CodeQError):
    """The store answered with something the scripts never return (a bug or a broken server)."""

    status = 500
    default_code = "store_error"


class _QueueMeta(msgspec.Struct):
    tenant: str
    command: str


_meta_decoder = msgspec.json.Decoder(_QueueMeta)


def _delays(delays_ms: Sequence[int]) -> str:
    if isinstance(delays_ms, tuple):
        return _joined_delays(delays_ms)
    return ",".join(str(int(d)) for d in delays_ms)


@lru_cache(maxsize=256)
def _joined_delays(delays_ms: tuple[int, ...]) -> str:
    return ",".join(str(int(d)) for d in delays_ms)


def _address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    return f"[{host}]:{parts.port or 6379}" if ":" in host else f"{host}:{parts.port or 6379}"


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
    return StoreError(f"unexpected script reply {code!r}")


#: what a 503 says when the store got the call and its answer did not come back
OUTCOME_UNKNOWN = (
    "the store did not answer in time ({}): the change may have been made; retrying with the "
    "same idempotencyKey (or the same leaseId) is safe"
)


class _AfterSend(Exception):
    """A batch failed once its calls had been written to the store (``__cause__``)."""


def _translate(exc: BaseException, script: Script, *, sent: bool = False) -> BaseException:
    if isinstance(exc, _UNAVAILABLE):
        if sent:
            return StoreUnavailable(
                OUTCOME_UNKNOWN.format(type(exc).__name__), outcome_unknown=True
            )
        return StoreUnavailable(f"store unavailable: {type(exc).__name__}")
    if isinstance(exc, rexc.RedisError):
        return StoreError(f"store error in {script.name}: {exc}")
    return exc


_Call = tuple[Script, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


async def _reply(conn: Any) -> Any:
    """The next reply on ``conn``; a command's error is its reply (the next one follows)."""
    try:
        return await conn.read_response()
    except rexc.ResponseError as exc:
        return exc


# KVRocks, the store this product is built for, differs from Redis in two ways that shape how
# we talk to it (tests/test_kvrocks_durability.py and tests/test_kvrocks_store.py pin them):
#
# * Crash atomicity. Redis applies a script whole (and logs it whole in its append-only file).
#   KVRocks (2.10) writes each command a script runs as a write of its own, so a crash in the
#   middle of a script keeps its first half: a task record without its ready entry, a ready
#   entry without its task, an idempotency key lost. A MULTI/EXEC transaction is written as one
#   batch, so on KVRocks every script call is wrapped in one. EXEC takes KVRocks' exclusive
#   lock, as a script already does in 2.10, so the transaction costs no concurrency there, and
#   with a synced WAL it is faster: one sync per call instead of one per write. (Releases with
#   `lua-strict-key-accessing` run scripts on different keys in parallel; EXEC would still
#   serialise them.)
# * No blocking reads. While a transaction runs, KVRocks collects its writes in a batch that
#   every reader consults; commands wait for it behind a lock, but a blocked XREAD/XREADGROUP
#   that an XADD wakes runs its read (and XREADGROUP its writes) outside that lock, against the
#   batch being filled: "Corruption: WriteBatch has wrong count", then a crash. So on KVRocks
#   reads never block on the server: ``read_stream`` and ``read_group`` poll with a short,
#   growing pause (``_poll``) until their block time is up.


class _ServerKind:
    """What the store's server is, asked once and shared by the store and its coalescer:
    ``kvrocks`` is None until then (a cluster or the embedded store know it up front)."""

    def __init__(self, kvrocks: bool | None = None) -> None:
        self.kvrocks = kvrocks

    async def ask(self, conn: Any) -> bool:
        """Ask the server on ``conn`` (its INFO names KVRocks' version). A server that refuses
        INFO (an ACL without it, a renamed command) is taken for Redis, with a warning: a
        KVRocks there would run its scripts without the transaction."""
        if self.kvrocks is None:
            await conn.send_packed_command(conn.pack_command("INFO", "server"), check_health=False)
            info = await _reply(conn)
            if isinstance(info, Exception):
                log.warning("the store refused INFO (%s): taken for Redis, scripts go bare", info)
            self.kvrocks = isinstance(info, bytes) and b"kvrocks_version:" in info
        return self.kvrocks


#: pauses between non-blocking reads on KVRocks: from 1 ms, doubling, up to the read's cap
_FIRST_POLL_S = 0.001
#: the cap for the event tail (a long poll's wake-up waits for it) and for consumer groups
TAIL_POLL_CAP_S = 0.004
GROUP_POLL_CAP_S = 0.025


async def _poll(read: Callable[[], Awaitable[Any]], block_ms: int, cap_s: float) -> Any:
    """``read()`` (a non-blocking stream read) until it answers with entries or ``block_ms``
    has passed: what ``BLOCK block_ms`` does, for a server where blocking reads are unsafe."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + block_ms / 1000
    pause = _FIRST_POLL_S
    while True:
        reply = await read()
        if _has_entries(reply):
            return reply
        remaining = deadline - loop.time()
        if remaining <= 0:
            return reply
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, cap_s)


def _has_entries(reply: Any) -> bool:
    """A stream read's reply holds an entry: nil, ``[[key, []]]`` (KVRocks) and an empty
    RESP3 map are all "nothing new"."""
    if not reply:
        return False
    streams = reply.values() if isinstance(reply, dict) else (s[1] for s in reply)
    return any(bool(entries) for entries in streams)


def _script_calls(batch: Sequence[_Call], transaction: bool) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for script, keys, args, _ in batch:
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        if transaction:
            out += [("MULTI",), call, ("EXEC",)]
        else:
            out.append(call)
    return out


async def _script_reply(conn: Any, transaction: bool) -> Any:
    """The reply of one call of :func:`_script_calls` (an error is returned, not raised)."""
    if not transaction:
        return await _reply(conn)
    began, queued, done = await _reply(conn), await _reply(conn), await _reply(conn)
    if isinstance(began, Exception):  # MULTI refused: the EVALSHA ran on its own, its reply
        return queued  # came second (and EXEC answered "EXEC without MULTI")
    if isinstance(queued, Exception):  # the call was refused when queued: EXEC aborted
        return queued
    if isinstance(done, list) and len(done) == 1:
        return done[0]  # the script's reply, or its error (NOSCRIPT, a Lua error)
    if isinstance(done, Exception):
        return done
    return rexc.ResponseError(f"unexpected EXEC reply {done!r}")


class _Coalescer:
    """Sends the script calls that concurrent coroutines make in the same instant as one
    non-transactional pipeline: each call is still exactly one EVALSHA (one script, atomic on
    its own; on KVRocks inside its own MULTI/EXEC, see ``_ServerKind``), but many share one
    socket write and one pool checkout. This is how one asyncio
    process gets past redis-py's per-call overhead. Nothing waits to fill a batch: a call made
    while the connection is idle goes out on the next loop iteration, alone.
    """

    def __init__(
        self, client: Any, kind: _ServerKind, *, max_batch: int = 256, max_inflight: int = 8
    ) -> None:
        self._client = client
        self._kind = kind
        self._pending: list[_Call] = []
        self._inflight = 0
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._drainers: set[asyncio.Task[None]] = set()
        # connections held between batches (the pool counts them in use; closing the client
        # disconnects them with the rest)
        self._kept: list[Any] = []
        # never so many that other commands wait for the pool
        pool_size = int(getattr(client.connection_pool, "max_connections", 0) or 0)
        self._keep_max = min(max_inflight, pool_size // 4)

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, fut))
        if self._inflight < self._max_inflight:
            self._inflight += 1
            task = loop.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._execute(batch)
        finally:
            self._inflight -= 1

    async def _connection(self) -> Any:
        """A connection for a batch: one kept from an earlier batch when it is still sound,
        else one from the pool. Keeping them skips the pool's checkout (a lock, a timeout
        context and a probe read each time: ~5 % of a deliverer's CPU)."""
        while self._kept:
            conn = self._kept.pop()
            if sound(conn):
                return conn
            await conn.disconnect()
            await self._client.connection_pool.release(conn)
        return await self._client.connection_pool.get_connection()

    async def _send(self, batch: list[_Call]) -> None:
        """One write of every EVALSHA, then their replies in order, on one connection (what a
        non-transactional pipeline does, without its per-command bookkeeping)."""
        pool = self._client.connection_pool
        conn = await self._connection()
        kept = False
        try:
            wrap = await self._kind.ask(conn)  # each call in MULTI/EXEC on KVRocks
            packed = conn.pack_commands(_script_calls(batch, wrap))
            try:
                await self._exchange(conn, packed, batch, wrap)
            except Exception as exc:  # written (or partly): the scripts may have run
                raise _AfterSend() from exc
            if len(self._kept) < self._keep_max:
                self._kept.append(conn)  # every reply read: clean for the next batch
                kept = True
        except BaseException:
            await conn.disconnect()  # the replies on this connection are out of step now
            raise
        finally:
            if not kept:
                await pool.release(conn)

    @staticmethod
    async def _exchange(conn: Any, packed: Any, batch: list[_Call], wrap: bool) -> None:
        """Write the batch and read its replies, each handed to its caller as soon as it is
        read (the server runs the calls one after the other: the first callers go on while it
        still runs the last). Calls the server had lost its scripts for (restarted: NOSCRIPT,
        so they did not run) are loaded and run again."""
        await conn.send_packed_command(packed, check_health=False)
        missing: list[int] = []
        for i, call in enumerate(batch):
            reply = await _script_reply(conn, wrap)
            if isinstance(reply, rexc.NoScriptError):
                missing.append(i)
            else:
                _resolve(call, reply)
        if missing:
            scripts = {batch[i][0].sha: batch[i][0] for i in missing}
            again: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", x.source) for x in scripts.values()]
            again += _script_calls([batch[i] for i in missing], wrap)
            await conn.send_packed_command(conn.pack_commands(again), check_health=False)
            for _ in scripts:
                loaded = await _reply(conn)
                if isinstance(loaded, Exception):
                    raise loaded
            for i in missing:
                _resolve(batch[i], await _script_reply(conn, wrap))

    async def _execute(self, batch: list[_Call]) -> None:
        try:
            await self._send(batch)
        except BaseException as exc:  # the rest of the batch failed (connection lost, cancelled)
            sent = isinstance(exc, _AfterSend)
            cause = exc.__cause__ if sent and exc.__cause__ is not None else exc
            for script, _, _, fut in batch:
                if fut.done():
                    continue  # answered before the failure (or its caller gave up)
                if isinstance(cause, Exception):
                    fut.set_exception(_translate(cause, script, sent=sent))
                else:  # the drainer was cancelled, not the callers: to them, an outage
                    fut.set_exception(StoreUnavailable("store call interrupted"))
            if not isinstance(exc, Exception):
                raise


def _resolve(call: _Call, reply: Any) -> None:
    """Hand a script call's reply (or its error) to the caller still waiting for it."""
    script, _, _, fut = call
    if fut.done():
        return
    if isinstance(reply, Exception):
        fut.set_exception(_translate(reply, script))
    else:
        fut.set_result(reply)


@dataclass(frozen=True, slots=True)
class _ClaimAt:
    """What claims must share to be served by one claim script call. The backoff table (for
    the leases the call's repair finds expired) is not among it: each claim brings one drawn
    at random, and the call uses its first claim's."""

    partition: int
    queues: tuple[str, ...]
    lease_ms: int
    repair_limit: int
    dlq_retention_ms: int
    delays: str = field(compare=False)


#: one result of result.lua: tenant, task id, worker id, lease id or "", status, result JSON,
#: error or "", retention ms
_ResultItem = tuple[str, str, str, str, str, bytes, str, int]


class RedisStore:
    """A :class:`codeq.store.protocol.Store` on a redis-py asyncio client."""

    def __init__(
        self,
        client: Any,
        keys: KeySchema,
        *,
        cluster: bool = False,
        coalesce: bool = False,
        address: str = "embedded",
        protocol: int = 2,
    ) -> None:
        self._client = client
        self.keys = keys
        self.cluster = cluster
        #: where the store is, for messages (``host:port`` or a socket path; never a password)
        self.address = address
        self._protocol = protocol
        self._scripts = load_scripts()
        # Redis Cluster applies scripts whole; a KVRocks cluster is not covered yet
        self._kind = _ServerKind(False if cluster else None)
        self._coalescer = _Coalescer(client, self._kind) if coalesce and not cluster else None
        # concurrent creates of a partition share a script call (see codeq/store/merge.py)
        self._creates: CallMerger[tuple[int, int], CreateItem] = CallMerger(self._create_call)
        self._results: CallMerger[int, _ResultItem] = CallMerger(self._result_call)
        self._claims: CallMerger[_ClaimAt, tuple[str, str]] = CallMerger(self._claim_call)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        keys: KeySchema,
        *,
        cluster: bool = False,
        pool_size: int = 64,
        connect_timeout: float = 2.0,
        socket_timeout: float = 5.0,
        coalesce: bool = True,
        protocol: int = 2,
    ) -> RedisStore:
        """A store on the server at ``url``. The client speaks ``protocol`` (RESP2 unless the
        URL says ``protocol=3``): KVRocks' default and every Redis speak it, and RESP3 measured
        no faster (docs/performance.md)."""
        common: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
            "decode_responses": False,
            "protocol": protocol,
        }
        if cluster:
            client: Any = RedisCluster.from_url(url, max_connections=pool_size, **common)
        else:
            # A blocking pool: a burst beyond pool_size waits for a connection instead of failing.
            if url.startswith("redis://"):  # TLS and unix sockets keep redis-py's own class
                common["connection_class"] = HiredisPackConnection
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=pool_size, timeout=socket_timeout, **common
            )
            client = aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
        return cls(
            client,
            keys,
            cluster=cluster,
            coalesce=coalesce,
            address=_address(url),
            protocol=protocol,
        )

    @classmethod
    def embedded(cls, keys: KeySchema) -> RedisStore:
        """The in-process store: the same scripts on fakeredis's Lua engine. Nothing persists."""
        import fakeredis

        store = cls(fakeredis.FakeAsyncRedis(), keys)
        store._kind.kvrocks = False  # nothing to crash apart: the process holds it all
        return store

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for the event reader and tests)."""
        return self._client

    # -- plumbing -----------------------------------------------------------------------

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._coalescer is not None:
            return await self._coalescer.call(script, keys, args)
        try:
            await self.on_kvrocks()
            try:
                return await self._evalsha(script, keys, args)
            except rexc.NoScriptError:
                await self._client.script_load(script.source)
                return await self._evalsha(script, keys, args)
        except _UNAVAILABLE as exc:  # a timeout: the call was sent, its answer did not come
            raise _translate(exc, script, sent=isinstance(exc, rexc.TimeoutError)) from exc
        except rexc.RedisError as exc:
            raise StoreError(f"store error in {script.name}: {exc}") from exc

    async def on_kvrocks(self) -> bool:
        """Whether the store is KVRocks (asked once, see ``_ServerKind``)."""
        if self._kind.kvrocks is not None:
            return self._kind.kvrocks
        pool = self._client.connection_pool
        try:
            conn = await pool.get_connection()
            try:
                return await self._kind.ask(conn)
            except BaseException:
                await conn.disconnect()  # a reply may still be on its way
                raise
            finally:
                await pool.release(conn)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}") from exc

    async def _evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if not self._kind.kvrocks:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        pipe = self._client.pipeline(transaction=True)  # KVRocks: see _ServerKind
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        (reply,) = await pipe.execute()
        return reply

    async def _run(
        self, name: str, partition: int, args: Sequence[Any], extra_keys: Sequence[str] = ()
    ) -> Any:
        keys = self.keys.partition(partition).all
        if extra_keys:
            keys = (*keys, *extra_keys)
        return await self._eval(self._scripts[name], keys, args)

    async def check(self) -> None:
        """The store answers as a server these settings can use: ``StoreHandshakeError`` names
        the setting to change, ``StoreUnavailable`` says it is not reachable (yet)."""
        await check_handshake(self._client, self.address, protocol=self._protocol)
        await self.on_kvrocks()

    async def load_scripts(self) -> None:
        """Register every script with the server (cluster: every primary). Optional: calls
        recover from ``NOSCRIPT`` by themselves."""
        try:
            for script in self._scripts.values():
                await self._client.script_load(script.source)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}") from exc

    # -- streams (read-only, no script needed) ---------------------------------------------

    async def stream_end(self, key: str) -> str:
        """The id of the newest entry of a stream ("0-0" when empty): where a tail starts."""
        try:
            last = await self._client.xrevrange(key, count=1)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}") from exc
        return _s(last[0][0]) if last else "0-0"

    async def read_stream(
        self, key: str, after: str, *, block_ms: int, count: int
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries after ``after`` (``XREAD BLOCK``; polled on KVRocks, see ``_poll``); an empty
        list when the block times out. KVRocks answers ``[[key, []]]`` where Redis answers nil:
        both mean nothing new."""
        try:
            if await self.on_kvrocks():
                reply = await _poll(
                    lambda: self._client.xread({key: after}, count=count),
                    block_ms,
                    TAIL_POLL_CAP_S,
                )
            else:
                reply = await self._client.xread({key: after}, count=count, block=block_ms)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}") from exc
        out: list[tuple[str, dict[str, str]]] = []
        if not reply:
            return out
        streams = reply.items() if isinstance(reply, dict) else reply
        for _, entries in streams:
            if entries and isinstance(entries[0], list) and not isinstance(entries[0][0], bytes):
                entries = entries[0]  # RESP3 dict form nests one level deeper
            for entry_id, fields in entries or ():
                out.append(
                    (
                        _s(entry_id),
                        {_s(k): _s(v) for k, v in fields.items()},
                    )
                )
        return out

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        close = getattr(self._client, "aclose", None) or self._client.close
        with contextlib.suppress(*_UNAVAILABLE):
            await close()

    # -- transitions --------------------------------------------------------------------

    async def create(
        self, partition: int, items: Sequence[CreateItem], *, idempotency_ttl_ms: int
    ) -> list[CreateReply]:
        """Create ``items`` in ``partition``: one script call, shared with the creates other
        coroutines make in the same instant, cut in calls of at most ``MAX_SCRIPT_ITEMS``."""
        reply = await self._creates.submit((partition, idempotency_ttl_ms), items)
        out: list[CreateReply] = []
        for entry, item in zip(reply, items, strict=True):
            code = _s(entry[0])
            if code == "OK":
                out.append(CreateReply(outcome="created", task=decode_task(entry[1], item.payload)))
            elif code == "DUP":
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
                item.record,
                item.payload,
                "" if item.run_at_ms is None else item.run_at_ms,
                "" if item.delay_ms is None else item.delay_ms,
                idx,
                item.queue_meta,
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
        at = _ClaimAt(
            partition, tuple(queues), lease_ms, repair_limit, dlq_retention_ms, _delays(delays_ms)
        )
        (reply,) = await self._claims.submit(at, [(worker_id, lease_id)])
        if _s(reply[0]) == "EMPTY":
            return None
        return decode_task(reply[1], reply[2])

    async def _claim_call(self, at: _ClaimAt, items: list[tuple[str, str]]) -> list[Any]:
        """One claim script call: one reply per (worker id, lease id) (see claim.lua)."""
        args: list[Any] = [at.lease_ms, at.repair_limit, at.delays, at.dlq_retention_ms]
        args += [len(at.queues), *at.queues]
        for worker_id, lease_id in items:
            args += (worker_id, lease_id)
        reply: list[Any] = await self._run("claim", at.partition, args)
        return reply

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
            _delays(delays_ms),
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

    async def requeue_dlq(
        self, partition: int, tenant: str, queue: str, ids: Sequence[str], *, limit: int
    ) -> list[str]:
        reply = await self._run("requeue_dlq", partition, [tenant, queue, limit, *ids])
        return [_s(x) for x in reply[1:]]

    async def dlq_page(
        self, partition: int, queue: str, *, cursor: str | None, size: int
    ) -> tuple[list[Task], str | None]:
        reply = await self._run("dlq_page", partition, [queue, cursor or "", size])
        nxt = _s(reply[0]) or None
        return [decode_task(raw) for raw in reply[1:]], nxt

    async def stats(
        self, partition: int, *, tenant: str | None = None, queues: Sequence[str] = ()
    ) -> list[QueueStats]:
        if queues:
            args: list[Any] = ["list", *queues]
        elif tenant is not None:
            args = ["prefix", queues_prefix(tenant)]
        else:
            args = ["all"]
        reply = await self._run("stats", partition, args)
        out: list[QueueStats] = []
        for i in range(0, len(reply), 6):
            meta_raw = reply[i + 1]
            if not meta_raw:
                continue
            meta = _meta_decoder.decode(meta_raw)
            out.append(
                QueueStats(
                    tenant_id=meta.tenant,
                    command=meta.command,
                    ready=int(reply[i + 2]),
                    delayed=int(reply[i + 3]),
                    in_progress=int(reply[i + 4]),
                    dlq=int(reply[i + 5]),
                )
            )
        return out

    async def purge(
        self,
        partition: int,
        *,
        before_ms: int | None,
        limit: int,
        tenant: str | None = None,
        after: tuple[int, str] | None = None,
    ) -> PurgeReply:
        args = [
            "" if before_ms is None else before_ms,
            limit,
            tenant or "",
            "" if after is None else after[0],
            "" if after is None else after[1],
        ]
        reply = await self._run("purge", partition, args)
        score, member = _s(reply[2]), _s(reply[3])
        return PurgeReply(
            purged=int(reply[0]),
            looked=int(reply[4]),
            more=bool(int(reply[1])),
            last=(int(float(score)), member) if member else None,
        )

    async def sweep(
        self,
        partition: int,
        *,
        token: str,
        lock_ms: int,
        limit: int,
        delays_ms: Sequence[int],
        dlq_retention_ms: int,
    ) -> SweepReport | None:
        args = [token, lock_ms, limit, _delays(delays_ms), dlq_retention_ms]
        reply = await self._run("sweep", partition, args)
        if _s(reply[0]) == "LOCKED":
            return None
        return SweepReport(
            promoted=int(reply[1]),
            expired=int(reply[2]),
            purged=int(reply[3]),
            more=bool(int(reply[4])),
        )

    async def trim_events(self, partition: int, *, floor_ms: int) -> int:
        reply = await self._run("trim_events", partition, [floor_ms])
        return int(reply[0])

    async def gauges(self, partition: int) -> PartitionGauges:
        """Queue depths per command, delivery schedule and DLQ sizes and consumer-group lag
        of one partition: one read-only script call (``gauges.lua``)."""
        d = self.keys.delivery(partition)
        keys = (*self.keys.partition(partition).all, d.due, d.dead)
        deliveries, groups, rows = await self._eval(self._scripts["gauges"], keys, ())
        return PartitionGauges(
            scheduled_deliveries=int(deliveries[0]),
            dead_deliveries=int(deliveries[1]),
            groups=tuple(
                GroupLag(
                    group=_s(groups[i]),
                    lag=None if int(groups[i + 1]) < 0 else int(groups[i + 1]),
                    pending=int(groups[i + 2]),
                )
                for i in range(0, len(groups), 3)
            ),
            commands=tuple(
                CommandDepths(
                    command=_s(rows[i]),
                    ready=int(rows[i + 1]),
                    delayed=int(rows[i + 2]),
                    in_progress=int(rows[i + 3]),
                    dlq=int(rows[i + 4]),
                )
                for i in range(0, len(rows), 5)
            ),
        )


def queues_prefix(tenant: str) -> str:
    return f"{escape(tenant)}/"
