"""Script calls on the wire: what the server is (Redis or KVRocks, asked once), and the
coalescer that sends the calls concurrent coroutines make in the same instant as one pipeline.

Every call stays exactly one ``FCALL`` (one script, atomic on its own); on KVRocks each call of
a script that writes goes inside its own ``MULTI``/``EXEC`` (see the note on
:class:`ServerKind`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rexc

from codeq.errors import StoreUnavailable
from codeq.store.connection import sound
from codeq.store.errors import function_missing, translate
from codeq.store.scripts import Script

__all__ = ["Coalescer", "ServerKind"]

log = logging.getLogger("codeq.store")


class _AfterSend(Exception):
    """A batch failed once its calls had been written to the store (``__cause__``)."""


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
#   serialise them.) A script that only reads (``Script.read_only``) has nothing to keep
#   whole, so it goes bare: still ``FCALL``, which takes the exclusive lock. ``FCALL_RO`` would
#   run under the shared lock, beside other reads, but KVRocks 2.10 keeps one "current
#   connection" for every script on the server, which two read-only scripts on two workers at
#   once overwrite for each other (a script's commands then run on the other's connection, one
#   that may be freed under it: apache/kvrocks#2638, fixed after 2.10.1).
# * No blocking reads. While a transaction runs, KVRocks collects its writes in a batch that
#   every reader consults; commands wait for it behind a lock, but a blocked XREAD/XREADGROUP
#   that an XADD wakes runs its read (and XREADGROUP its writes) outside that lock, against the
#   batch being filled: "Corruption: WriteBatch has wrong count", then a crash. So on KVRocks
#   reads never block on the server: ``read_stream`` and ``read_group`` poll with a short,
#   growing pause (``codeq.store.streams.poll``) until their block time is up.


class ServerKind:
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


def _wrapped(script: Script, transaction: bool) -> bool:
    """Whether a call of ``script`` goes inside MULTI/EXEC: on KVRocks, a script that writes."""
    return transaction and not script.read_only


def _script_calls(batch: Sequence[_Call], transaction: bool) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for script, keys, args, _ in batch:
        call = ("FCALL", script.function, len(keys), *keys, *args)
        if _wrapped(script, transaction):
            out += [("MULTI",), call, ("EXEC",)]
        else:
            out.append(call)
    return out


async def _script_reply(conn: Any, script: Script, transaction: bool) -> Any:
    """The reply of one call of :func:`_script_calls` (an error is returned, not raised)."""
    if not _wrapped(script, transaction):
        return await _reply(conn)
    began, queued, done = await _reply(conn), await _reply(conn), await _reply(conn)
    if isinstance(began, Exception):  # MULTI refused: the FCALL ran on its own, its reply
        return queued  # came second (and EXEC answered "EXEC without MULTI")
    if isinstance(queued, Exception):  # the call was refused when queued: EXEC aborted
        return queued
    if isinstance(done, list) and len(done) == 1:
        return done[0]  # the script's reply, or its error (no such function, a Lua error)
    if isinstance(done, Exception):
        return done
    return rexc.ResponseError(f"unexpected EXEC reply {done!r}")


class Coalescer:
    """Sends the script calls that concurrent coroutines make in the same instant as one
    non-transactional pipeline: each call is still exactly one FCALL (one script, atomic on
    its own; on KVRocks a write inside its own MULTI/EXEC, see ``ServerKind``), but many share one
    socket write and one pool checkout. This is how one asyncio
    process gets past redis-py's per-call overhead. Nothing waits to fill a batch: a call made
    while the connection is idle goes out on the next loop iteration, alone.
    """

    def __init__(
        self, client: Any, kind: ServerKind, *, max_batch: int = 256, max_inflight: int = 8
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
        """One write of every FCALL, then their replies in order, on one connection (what a
        non-transactional pipeline does, without its per-command bookkeeping)."""
        pool = self._client.connection_pool
        conn = await self._connection()
        kept = False
        try:
            wrap = await self._kind.ask(conn)  # each write in MULTI/EXEC on KVRocks
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
        still runs the last). The calls whose function the server did not have (they did not
        run) go to :func:`_recover`."""
        await conn.send_packed_command(packed, check_health=False)
        missing: list[int] = []
        for i, call in enumerate(batch):
            reply = await _script_reply(conn, call[0], wrap)
            if function_missing(reply):
                missing.append(i)
            else:
                _resolve(call, reply)
        if missing:
            await _recover(conn, batch, missing, wrap)

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
                    fut.set_exception(translate(cause, script.name, sent=sent))
                else:  # the drainer was cancelled, not the callers: to them, an outage
                    fut.set_exception(StoreUnavailable("store call interrupted"))
            if not isinstance(exc, Exception):
                raise


async def _recover(conn: Any, batch: list[_Call], missing: list[int], wrap: bool) -> None:
    """The calls of ``batch`` whose function the server did not have (restarted without its
    data, a library deleted, or this release's first call there): they did not run. Their
    libraries are loaded and they are sent again, and their new replies are their answers. A
    load may be refused because another process loaded the library meanwhile (its call then
    runs) or for another reason: a call whose function is still missing is answered with why
    its load was refused (a Redis out of memory: a 503, as on the unpipelined path)."""
    load = {batch[i][0].function: batch[i][0] for i in missing}
    again = [("FUNCTION", "LOAD", script.source) for script in load.values()]
    again += _script_calls([batch[i] for i in missing], wrap)
    await conn.send_packed_command(conn.pack_commands(again), check_health=False)
    refused: dict[str, Exception] = {}
    for function in load:
        loaded = await _reply(conn)
        if isinstance(loaded, Exception):
            refused[function] = loaded
    for i in missing:
        reply = await _script_reply(conn, batch[i][0], wrap)
        if function_missing(reply):
            reply = refused.get(batch[i][0].function, reply)
        _resolve(batch[i], reply)


def _resolve(call: _Call, reply: Any) -> None:
    """Hand a script call's reply (or its error) to the caller still waiting for it."""
    script, _, _, fut = call
    if fut.done():
        return
    if isinstance(reply, Exception):
        fut.set_exception(translate(reply, script.name))
    else:
        fut.set_result(reply)
