"""One redis-py client on Redis, KVRocks or Redis Cluster (or the embedded emulation), and the
scripts of ``codeq/store/lua`` called on it as functions: what every part of the store is built
on.

:class:`ScriptStore` opens the client, tells Redis from KVRocks (once), sends each script call
(through the coalescer on a standalone server) and translates what redis-py raises
(:mod:`codeq.store.errors`). The parts of the store (tasks, upkeep, gauges, the event tail,
deliveries, endpoints, subscriptions, rate limits) call it and know nothing of connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Self
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from codeq.store.coalescer import Coalescer, ServerKind
from codeq.store.connection import HiredisPackConnection, HiredisPackUnixConnection
from codeq.store.errors import (
    UNAVAILABLE,
    StoreError,
    function_missing,
    translate,
    unavailable,
)
from codeq.store.handshake import check_functions, check_handshake
from codeq.store.keys import KeySchema
from codeq.store.scripts import Script, library_names, load_scripts

__all__ = ["ScriptStore"]


def _address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    return f"[{host}]:{parts.port or 6379}" if ":" in host else f"{host}:{parts.port or 6379}"


class ScriptStore:
    """A redis-py asyncio client and the store's scripts on it."""

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
        # Looked up at every call (never cached by a part): tests swap in checked copies.
        self._scripts = load_scripts()
        # Redis Cluster applies scripts whole; a KVRocks cluster is not covered yet
        self._kind = ServerKind(False if cluster else None)
        self._coalescer = Coalescer(client, self._kind) if coalesce and not cluster else None

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
    ) -> Self:
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
            if url.startswith("redis://"):  # TLS keeps redis-py's own class
                common["connection_class"] = HiredisPackConnection
            elif url.startswith("unix://"):
                common["connection_class"] = HiredisPackUnixConnection
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
    def embedded(cls, keys: KeySchema) -> Self:
        """The in-process store: the same scripts on fakeredis's Lua engine. Nothing persists."""
        import fakeredis

        store = cls(fakeredis.FakeAsyncRedis(), keys)
        store._kind.kvrocks = False  # nothing to crash apart: the process holds it all
        return store

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for tests and benchmarks)."""
        return self._client

    # -- script calls -------------------------------------------------------------------

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._coalescer is not None:
            return await self._coalescer.call(script, keys, args)
        try:
            await self.on_kvrocks()
            try:
                return await self._fcall(script, keys, args)
            except rexc.ResponseError as exc:
                if not function_missing(exc):  # else it did not run: load it and call again
                    raise
                try:
                    await self._load(script)
                except UNAVAILABLE as lost:  # the call did not run: no outcome unknown
                    raise unavailable(lost) from lost
                return await self._fcall(script, keys, args)
        except UNAVAILABLE as exc:  # a timeout: the call was sent, its answer did not come
            raise translate(exc, script.name, sent=isinstance(exc, rexc.TimeoutError)) from exc
        except rexc.RedisError as exc:
            raise StoreError(f"store error in {script.name}: {exc}") from exc

    async def _fcall(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        call = ("FCALL", script.function, len(keys), *keys, *args)
        if not self._kind.kvrocks or script.read_only:  # a read needs no transaction
            return await self._client.execute_command(*call)
        pipe = self._client.pipeline(transaction=True)  # KVRocks: see ServerKind
        pipe.execute_command(*call)
        (reply,) = await pipe.execute()
        return reply

    async def _on_nodes(self) -> list[dict[str, Any]]:
        """Where a library must be: the server, or each primary of a cluster (as the
        ``target_nodes`` of a command; a cluster client learns them on its first command)."""
        if not self.cluster:
            return [{}]
        await self._client.initialize()  # at once when it knows them
        return [{"target_nodes": node} for node in self._client.get_primaries()]

    async def _has(self, script: Script, on: dict[str, Any]) -> bool:
        """Whether the server (the primary ``on`` names) has ``script``'s library."""
        reply = await self._client.execute_command(
            "FUNCTION", "LIST", "LIBRARYNAME", script.function, **on
        )
        return script.function in library_names(reply)

    async def _load(self, script: Script) -> None:
        """Load ``script``'s library (on each primary of a cluster). A load refused while the
        library is there (another process loaded it meanwhile) is no error."""
        for on in await self._on_nodes():
            try:
                await self._client.execute_command("FUNCTION", "LOAD", script.source, **on)
            except rexc.ResponseError:
                if not await self._has(script, on):
                    raise

    async def _run(
        self, name: str, partition: int, args: Sequence[Any], extra_keys: Sequence[str] = ()
    ) -> Any:
        """Script ``name`` on the keys of a task partition (plus ``extra_keys``)."""
        keys = self.keys.partition(partition).all
        if extra_keys:
            keys = (*keys, *extra_keys)
        return await self._eval(self._scripts[name], keys, args)

    async def _command(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A plain command (``method`` of the client), every error translated."""
        try:
            return await self._refusable(method, *args, **kwargs)
        except rexc.ResponseError as exc:
            raise StoreError(f"store error in {method}: {exc}") from exc

    async def _refusable(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`_command`, except that a refusal of the server (``rexc.ResponseError``:
        ``BUSYGROUP``, ``NOGROUP``, no such stream) is raised as is, for a caller that knows
        what it means there."""
        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except rexc.ResponseError:
            raise
        except rexc.RedisError as exc:
            raise StoreError(f"store error in {method}: {exc}") from exc

    async def on_kvrocks(self) -> bool:
        """Whether the store is KVRocks (asked once, see ``ServerKind``)."""
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
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    # -- life cycle ---------------------------------------------------------------------

    async def check(self) -> None:
        """The store answers as a server these settings can use: ``StoreHandshakeError`` names
        the setting to change, ``StoreUnavailable`` says it is not reachable (yet)."""
        await check_handshake(self._client, self.address, protocol=self._protocol)
        await self.on_kvrocks()
        try:
            await check_functions(self._client, self.address)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def load_scripts(self) -> None:
        """Load every script's library (cluster: on every primary). Optional: a call whose
        function the server does not have loads its library by itself."""
        try:
            for script in self._scripts.values():
                await self._load(script)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except rexc.RedisError as exc:
            raise StoreError(f"store error loading the scripts: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def close(self) -> None:
        close = getattr(self._client, "aclose", None) or self._client.close
        with contextlib.suppress(*UNAVAILABLE):
            await close()
