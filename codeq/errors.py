"""The one error hierarchy of codeQ.

    CodeQError                 base; carries a machine ``code`` and an HTTP-ish ``status``
    ├── InvalidRequest         400  a field is missing, of the wrong type or out of range
    ├── Unauthorized           401  no or bad credentials
    ├── Forbidden              403  authenticated but not allowed (``forbidden``, ``not_owner``)
    ├── NotFound               404  unknown id, or one that belongs to another tenant
    ├── Conflict               409  illegal transition (``not_in_progress``, ``lease_mismatch``,
    │                               ``idempotency_conflict``)
    ├── TooLarge               413  a body, payload, result or artifact over its limit
    ├── RateLimited            429  with ``retry_after`` seconds
    └── StoreUnavailable       503  the store did not answer; nothing was changed or the change
                                    is unknown — the client retries

Third-party errors (redis, httpx) are translated into these where they enter codeQ.
"""

from __future__ import annotations

__all__ = [
    "CodeQError",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "StoreUnavailable",
    "TooLarge",
    "Unauthorized",
]


class CodeQError(Exception):
    """Base of every error codeQ raises on purpose."""

    status: int = 500
    default_code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None, task_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.task_id = task_id


class InvalidRequest(CodeQError):
    status = 400
    default_code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.field = field


class Unauthorized(CodeQError):
    status = 401
    default_code = "unauthorized"


class Forbidden(CodeQError):
    status = 403
    default_code = "forbidden"


class NotFound(CodeQError):
    status = 404
    default_code = "not_found"


class Conflict(CodeQError):
    status = 409
    default_code = "conflict"


class RateLimited(CodeQError):
    """429: the caller's token bucket is empty. ``scope`` (``producer``, ``worker``,
    ``admin``, ``webhook``) and ``operation`` say which limit, when known."""

    status = 429
    default_code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        code: str | None = None,
        scope: str | None = None,
        operation: str | None = None,
    ):
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.scope = scope
        self.operation = operation


class StoreUnavailable(CodeQError):
    """503. ``outcome_unknown``: the call reached the store and its answer did not come back
    (a timeout, a connection lost while waiting), so the change may have been made: a retry is
    safe where the operation is idempotent (a create with its ``idempotencyKey``; a result or
    a nack with the lease, which a second time answers 409)."""

    status = 503
    default_code = "store_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, outcome_unknown: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class TooLarge(CodeQError):
    """413: a body, payload, result or artifact is larger than its limit."""

    status = 413
    default_code = "payload_too_large"
