"""Open the store that the settings name: Redis/KVRocks (standalone or cluster) or embedded."""

from __future__ import annotations

import logging

from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore

__all__ = ["open_store"]

log = logging.getLogger("codeq.store")


def open_store(settings: Settings) -> RedisStore:
    """The store for these settings. ``persistenceProvider: memory`` (the default when no
    address is configured) gives the embedded store, which keeps nothing across restarts."""
    keys = KeySchema(settings.key_prefix, settings.partitions)
    if settings.store_kind == "memory":
        log.warning(
            "using the embedded in-memory store: nothing survives a restart "
            "(set REDIS_ADDR or redisUrl for KVRocks/Redis)"
        )
        return RedisStore.embedded(keys)
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
