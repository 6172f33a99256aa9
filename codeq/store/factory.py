"""Open the store that the settings name: Redis/KVRocks (standalone or cluster) or embedded.

The one place outside ``codeq/store``'s own parts that knows the concrete classes: what it
hands out is a :class:`~codeq.store.protocol.Backend`, whose parts (``tasks``, ``events``,
``groups``, ``deliveries``, ``endpoints``, ``subscriptions``, ``rate_limits``, ``meters``) each
consumer takes as the protocol naming what it uses (``tests/test_store_boundaries.py``).
"""

from __future__ import annotations

import logging

from codeq.errors import StoreUnavailable
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.protocol import Backend
from codeq.store.redis_store import RedisStore

__all__ = ["check_store", "open_store"]

log = logging.getLogger("codeq.store")


def open_store(settings: Settings) -> Backend:
    """The store for these settings. ``persistenceProvider: memory`` (the default when no
    address is configured) gives the embedded store, which keeps nothing across restarts."""
    keys = KeySchema(settings.key_prefix, settings.partitions)
    if settings.store_kind == "memory":
        log.warning(
            "using the embedded in-memory store: nothing survives a restart "
            "(set REDIS_ADDR or redisUrl for KVRocks/Redis)"
        )
        return RedisStore.embedded(keys)
    if settings.store_kind == "local":
        raise ValueError(
            "persistenceProvider local: the private store is started by `codeq serve` "
            "(codeq.store.local), which then opens it by its address"
        )
    url = settings.redis_url()
    if url is None:  # settings validation makes this unreachable; keep the message clear
        raise ValueError("persistenceProvider is redis but no redisAddr/redisUrl is set")
    return RedisStore.from_url(
        url,
        keys,
        cluster=settings.redis_cluster,
        pool_size=settings.redis_pool_size,
        connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
    )


async def check_store(settings: Settings) -> None:
    """Ask the configured store whether it is one these settings can use, before a server
    starts: :class:`~codeq.store.handshake.StoreHandshakeError` (a ``SettingsError``) names
    the setting to change. A store that cannot be reached yet only gets a warning: the
    service starts and answers 503 with ``Retry-After`` until it can."""
    if settings.store_kind == "memory":
        return
    store = open_store(settings)
    try:
        await store.check()
    except StoreUnavailable:
        log.warning(
            "the store at %s is not reachable yet; requests get 503 until it is", store.address
        )
    finally:
        await store.close()
