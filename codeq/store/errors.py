"""The store's errors, and redis-py's translated into them where they enter.

Nothing above ``codeq/store`` sees a redis exception (the one hierarchy is
:mod:`codeq.errors`)::

    CodeQError
    ├── StoreUnavailable   connection trouble, timeouts, loading, TRYAGAIN, cluster down, a
    │                      Redis at maxmemory refusing a change (503)
    └── StoreError         any other server error, or a reply the scripts never give (500)

A script's refusal of a transition is no error here: it is a structured reply, which the module
of that transition turns into ``NotFound`` / ``Forbidden`` / ``Conflict``.
"""

from __future__ import annotations

from redis import exceptions as rexc

from codeq.errors import CodeQError, StoreUnavailable

__all__ = [
    "OUTCOME_UNKNOWN",
    "UNAVAILABLE",
    "StoreError",
    "function_missing",
    "translate",
    "unavailable",
]

#: what makes the store unreachable for now (every other redis error is a StoreError)
UNAVAILABLE = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    rexc.TryAgainError,
    rexc.ClusterDownError,
    rexc.RedisClusterException,  # the cluster client's own: no node reachable, slots moving
    rexc.OutOfMemoryError,  # Redis at maxmemory (noeviction) refuses every change until it is not
    OSError,
)

#: what a 503 says when the store got the call and its answer did not come back
OUTCOME_UNKNOWN = (
    "the store did not answer in time ({}): the change may have been made; retrying with the "
    "same idempotencyKey (or the same leaseId) is safe"
)


class StoreError(CodeQError):
    """The store answered with something the scripts never return (a bug or a broken server)."""

    status = 500
    default_code = "store_error"


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The 503 for connection trouble before anything was sent (or for a read), or for a
    change the store refused for want of memory (it did not run)."""
    if isinstance(exc, rexc.OutOfMemoryError):
        return StoreUnavailable("the store is out of memory (maxmemory): it refuses changes")
    return StoreUnavailable(f"store unavailable: {type(exc).__name__}")


def translate(exc: BaseException, what: str, *, sent: bool = False) -> BaseException:
    """``exc``, raised by redis-py doing ``what``, as the store's error (anything else as is).
    ``sent``: the call had been written, so a lost answer leaves its outcome unknown."""
    if isinstance(exc, UNAVAILABLE):
        if sent and not isinstance(exc, rexc.OutOfMemoryError):  # refused: it did not run
            return StoreUnavailable(
                OUTCOME_UNKNOWN.format(type(exc).__name__), outcome_unknown=True
            )
        return unavailable(exc)
    if isinstance(exc, rexc.RedisError):
        return StoreError(f"store error in {what}: {exc}")
    return exc


def function_missing(reply: object) -> bool:
    """``reply`` is the server's refusal of a call whose function it does not have: the call
    did not run, so loading the library and calling again is safe. This is the one error text
    the store reads besides BUSYGROUP and NOGROUP, because nothing else tells it apart from a
    script's own failure without a race (asking the server afterwards, another process may have
    loaded the library in between). Redis (and fakeredis) word it "Function not found", KVRocks
    "No such function name found in storage"; tests/test_kvrocks_compat.py pins both on the
    real servers (redis-py's pipeline puts the command before either)."""
    if not isinstance(reply, rexc.ResponseError):
        return False
    text = str(reply)
    return "Function not found" in text or "No such function name found in storage" in text
