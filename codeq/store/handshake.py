"""The first word with the store: is the server at the configured address one we can talk to?

codeQ speaks RESP2 to every store (measured: RESP3 is no faster here, see docs/performance.md
§5, and RESP2 is what KVRocks speaks by default and every Redis speaks). A server that answers
the handshake in a way we cannot use gets one sentence that names the store's address and the
setting to change, at start-up, instead of a traceback from inside redis-py or a service that
answers 503 for ever:

* a password is missing or wrong (``redisPassword``),
* a client asked for RESP3 (``protocol=3``; the settings refuse it in ``redisUrl``, a library
  user can still pass it) against a server that answers ``HELLO 3`` in RESP2 (KVRocks'
  default ``resp3-enabled no``),
* something that is not Redis or KVRocks listens there (``redisAddr`` / ``redisUrl``),
* a server without functions (Redis before 7.0), or a user not allowed them (``redisAddr``).

A server that is simply not there yet is no such error: the service starts and answers 503
with ``Retry-After`` until it is.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rexc

from codeq.errors import StoreUnavailable
from codeq.settings import SettingsError

__all__ = ["StoreHandshakeError", "check_functions", "check_handshake"]


class StoreHandshakeError(SettingsError):
    """The store answered, but not as a Redis/KVRocks server we can use with these settings."""


async def check_handshake(client: Any, address: str, *, protocol: int = 2) -> None:
    """PING the store through ``client`` (a standalone or a cluster client speaking
    ``protocol``): return when it answers, raise :class:`StoreHandshakeError` when its answer
    shows a setting is wrong, and :class:`StoreUnavailable` when it cannot be reached."""
    try:
        try:
            await client.ping()
        except rexc.RedisClusterException as exc:  # the cluster client wraps the node's error
            cause = exc.__cause__
            if isinstance(cause, rexc.RedisError | OSError):
                raise cause from None
            if isinstance(exc, rexc.RedisClusterUnreachableError):
                raise rexc.ConnectionError(str(exc)) from None
            raise StoreHandshakeError(
                f"the store at {address} did not answer as a Redis Cluster ({_first_line(exc)}):"
                " set redisCluster to false for a single server, or check redisAddr/redisUrl",
                key="redisCluster",
                env="REDIS_CLUSTER",
            ) from None
    except rexc.AuthenticationError as exc:  # a ConnectionError in redis-py: test it first
        raise StoreHandshakeError(
            f"the store at {address} refused the connection's authentication ({_first_line(exc)}):"
            " set redisPassword (REDIS_PASSWORD / KVROCKS_PASSWORD) to its password",
            key="redisPassword",
            env="REDIS_PASSWORD",
        ) from None
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"store at {address} unavailable: {type(exc).__name__}") from None
    except rexc.InvalidResponse as exc:
        raise StoreHandshakeError(
            f"the server at {address} does not speak the Redis protocol ({_first_line(exc)}):"
            " set redisAddr or redisUrl to a KVRocks or Redis server",
            key="redisAddr",
            env="REDIS_ADDR",
        ) from None
    except rexc.ResponseError as exc:
        raise StoreHandshakeError(
            f"the store at {address} refused the handshake ({_first_line(exc)}):"
            " check redisAddr/redisUrl and redisPassword",
            key="redisUrl",
            env="REDIS_URL",
        ) from None
    except AttributeError as exc:
        if protocol != 3:
            raise
        # redis-py reads HELLO's reply as a map; a RESP2 server answers with a flat list.
        raise StoreHandshakeError(
            f"the store at {address} answered the RESP3 handshake (HELLO 3) in RESP2"
            f" ({type(exc).__name__}): connect with protocol=2 (codeQ's default), or set"
            " resp3-enabled yes in kvrocks.conf",
            key="redisUrl",
            env="REDIS_URL",
        ) from None


async def check_functions(client: Any, address: str) -> None:
    """The server behind ``client`` has functions (Redis 7.0 or later, KVRocks), which is asked
    of it, not read from a version (KVRocks reports its own): raise
    :class:`StoreHandshakeError` when it refuses ``FUNCTION LIST``."""
    try:
        await client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "codeq_")
    except rexc.ResponseError as exc:
        raise StoreHandshakeError(
            f"the store at {address} refused FUNCTION LIST ({_first_line(exc)}): codeQ runs its"
            " scripts as functions, so it needs Redis 7.0 or later or KVRocks, and a user"
            " allowed FUNCTION and FCALL: set redisAddr or redisUrl to one",
            key="redisAddr",
            env="REDIS_ADDR",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
