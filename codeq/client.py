"""The Python SDK: ``CodeQClient`` (sync) and ``AsyncCodeQClient`` on httpx.

    from codeq.client import CodeQClient

    with CodeQClient("http://127.0.0.1:8080", token="...") as cq:
        task = cq.create_task("RENDER_VIDEO", {"id": 7})
        claimed = cq.claim(["RENDER_VIDEO"], wait_seconds=10)
        if claimed is not None:
            cq.complete(claimed.id, {"url": "s3://bucket/7.mp4"})

Bodies and answers are the server's own Structs (:mod:`codeq.schemas`). Every error answer
becomes a typed exception of :mod:`codeq.errors` (``NotFound``, ``Conflict``, ``Forbidden``,
``Unauthorized``, ``InvalidRequest``, ``TooLarge``, ``RateLimited`` with ``retry_after``,
``Unavailable`` with ``retry_after``), with ``status`` and the server's ``code``.

Tokens: ``token`` is used for every call; ``producer_token``, ``worker_token`` and
``admin_token`` override it for their kind of route (create/read, worker routes, admin routes).

Retries are made only where they are safe:
- a connection that could not be opened (nothing was sent), a 429 and a 503 ``overloaded``
  (the server refused before doing anything): every call;
- a 503, a timeout or a dropped connection: only calls that can be repeated without a second
  effect — reads, heartbeats, and creates that carry an ``idempotency_key``.
Waits follow ``Retry-After`` when the server sends one, else exponential backoff with jitter,
for at most ``retries`` repeats. Then the last error is raised.

The client remembers the ``leaseId`` of every task it claimed and sends it with heartbeat,
abandon, nack and result, so a worker whose lease was taken over is fenced off (409).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import httpx
import msgspec

from codeq import __version__
from codeq.catalog import EventTypeCatalog
from codeq.errors import (
    CodeQError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    StoreUnavailable,
    TooLarge,
    Unauthorized,
)
from codeq.schemas import (
    BatchCreateOut,
    CleanupOut,
    DlqOut,
    HeartbeatOut,
    NackOut,
    QueuesOut,
    QueueStatsOut,
    RequeueOut,
    ResultOut,
    StatusOut,
    TaskHistoryOut,
    TaskListOut,
    TaskOut,
    TaskWithResultOut,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "ApiError",
    "AsyncCodeQClient",
    "CodeQClient",
    "CodeQError",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
_PREFIX = "/v1/codeq"

T = TypeVar("T")
Auth = Literal["producer", "worker", "admin"]


class Unavailable(StoreUnavailable):
    """503, or the server could not be reached: try again after ``retry_after`` seconds."""

    default_code = "unavailable"


class ApiError(CodeQError):
    """An error answer with a status that has no class of its own (e.g. 500)."""

    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """(``error``, ``code``) of an answer in the API's JSON error shape, None where absent."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error, code = body.get("error"), body.get("code")
    return (str(error) if error else None), (code if isinstance(code, str) else None)


def _code(response: httpx.Response | None) -> str | None:
    return None if response is None else _error_body(response)[1]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _or_one(seconds: float | None) -> float:
    return 1.0 if seconds is None else seconds


def error_of(response: httpx.Response) -> CodeQError:
    """The typed exception of an error answer."""
    status = response.status_code
    error, code = _error_body(response)
    message = error or response.reason_phrase or f"HTTP {status}"
    exc: CodeQError
    if status == 400 or status == 422:
        exc = InvalidRequest(message, code=code)
    elif status == 401:
        exc = Unauthorized(message, code=code)
    elif status == 403:
        exc = Forbidden(message, code=code)
    elif status == 404:
        exc = NotFound(message, code=code)
    elif status == 409:
        exc = Conflict(message, code=code)
    elif status == 413:
        exc = TooLarge(message, code=code)
    elif status == 429:
        exc = RateLimited(message, retry_after=_or_one(_retry_after(response)), code=code)
    elif status == 503:
        exc = Unavailable(message, retry_after=_or_one(_retry_after(response)))
        if code:
            exc.code = code
    else:
        exc = ApiError(message, status=status, code=code)
    return exc


# -- calls: what each method sends and how its answer is read -------------------------------


#: the statuses a replay job ends in
REPLAY_ENDED = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    auth: Auth
    decode: Callable[[httpx.Response], T]
    body: Any = None
    params: Mapping[str, Any] | None = None
    # Repeating the call after an unknown outcome has no second effect.
    idempotent: bool = False
    timeout: float | None = None  # long polls add their wait to the client's timeout
    done: Callable[[T], None] | None = None  # bookkeeping after success (lease ids)
    trace: str | None = None  # the task's traceparent, so the server's spans join its trace


def _as(type_: type[T]) -> Callable[[httpx.Response], T]:
    def decode(response: httpx.Response) -> T:
        return msgspec.json.decode(response.content, type=type_)

    return decode


def _claimed(response: httpx.Response) -> TaskOut | None:
    if response.status_code == 204 or not response.content:
        return None
    return msgspec.json.decode(response.content, type=TaskOut)


def _nothing(response: httpx.Response) -> None:
    return None


def _json(response: httpx.Response) -> Any:
    return msgspec.json.decode(response.content) if response.content else None


def _drop_none(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _camel(fields: Mapping[str, Any]) -> dict[str, Any]:
    """snake_case keyword arguments → the API's camelCase fields, ``None`` dropped."""
    out = {}
    for key, value in fields.items():
        head, *rest = key.split("_")
        out[head + "".join(w.title() for w in rest)] = value
    return _drop_none(out)


def _bind(build: Callable[..., _Call[T]], *args: Any, **kwargs: Any) -> _Call[T]:
    """The call ``build`` makes of these arguments; arguments it does not take are the
    caller's mistake, reported as :class:`InvalidRequest` (never a raw ``TypeError``)."""
    try:
        inspect.signature(build).bind(*args, **kwargs)
    except TypeError as exc:
        name = build.__name__
        raise InvalidRequest(f"{name}: {exc}", code="invalid_argument") from None
    return build(*args, **kwargs)


def _task_id(task: str | TaskOut) -> str:
    return task if isinstance(task, str) else task.id


@dataclass
class _Retry:
    attempts: int
    base: float = 0.25
    cap: float = 10.0

    def delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, 60.0)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


@dataclass
class _Core:
    """What both clients share: the tokens, the lease ids, the calls."""

    base_url: str
    tokens: dict[str, str | None]
    retry: _Retry
    timeout: float
    leases: dict[str, str] = field(default_factory=dict)
    traces: dict[str, str] = field(default_factory=dict)

    def headers(self, call: _Call[Any]) -> dict[str, str]:
        token = self.tokens.get(call.auth) or self.tokens.get("default")
        out = {"Authorization": f"Bearer {token}"} if token else {}
        if call.trace:
            out["traceparent"] = call.trace
        return out

    def retryable(
        self, call: _Call[Any], exc: BaseException | None, response: httpx.Response | None
    ) -> bool:
        status = response.status_code if response is not None else None
        if status == 429 or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return True
        if status == 503 and _code(response) == "overloaded":
            return True  # shed before anything was done (maxInFlightRequests)
        if status == 503 or isinstance(exc, httpx.TransportError):
            return call.idempotent
        return False

    def request_args(self, call: _Call[Any]) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": call.path,
            "json": call.body,
            "params": call.params,
            "headers": self.headers(call),
            "timeout": call.timeout or self.timeout,
        }

    def next_delay(
        self,
        call: _Call[Any],
        attempt: int,
        exc: httpx.TransportError | None,
        response: httpx.Response | None,
    ) -> float:
        """How long to wait before repeating ``call``; raises the error when it is not
        repeated (not safe, or out of retries)."""
        if attempt >= self.retry.attempts or not self.retryable(call, exc, response):
            if response is not None:
                raise error_of(response)
            raise Unavailable(f"{self.base_url}: {exc!r}", retry_after=1.0) from exc
        return self.retry.delay(attempt, _retry_after(response) if response is not None else None)

    def answer(self, call: _Call[T], response: httpx.Response) -> T:
        value = call.decode(response)
        if call.done is not None:
            call.done(value)
        return value

    def lease(self, task_id: str, lease_id: str | None) -> str | None:
        return lease_id if lease_id is not None else self.leases.get(task_id)

    def remember(self, task: TaskOut | None) -> None:
        if task is not None and task.lease_id:
            self.leases[task.id] = task.lease_id
            if task.trace_parent:
                self.traces[task.id] = task.trace_parent

    def forget(self, task_id: str) -> Callable[[Any], None]:
        def done(_answer: Any) -> None:
            self.leases.pop(task_id, None)
            self.traces.pop(task_id, None)

        return done

    # -- the calls ----------------------------------------------------------------------

    def create_task(
        self,
        command: str,
        payload: Any,
        *,
        priority: int | None = None,
        webhook: str | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        run_at: datetime | str | None = None,
        delay_seconds: int | None = None,
    ) -> _Call[TaskOut]:
        body = _drop_none(
            {
                "command": command,
                "payload": payload,
                "priority": priority,
                "webhook": webhook,
                "maxAttempts": max_attempts,
                "idempotencyKey": idempotency_key,
                "runAt": _iso(run_at),
                "delaySeconds": delay_seconds,
            }
        )
        return _Call(
            "POST",
            "/tasks",
            "producer",
            _as(TaskOut),
            body=body,
            idempotent=idempotency_key is not None,
        )

    def create_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> _Call[BatchCreateOut]:
        items = [dict(t) for t in tasks]
        keyed = all(t.get("idempotencyKey") for t in items)
        return _Call(
            "POST",
            "/tasks/batch",
            "producer",
            _as(BatchCreateOut),
            body={"tasks": items},
            idempotent=keyed,
        )

    def claim(
        self,
        commands: Iterable[str] | None = None,
        *,
        lease_seconds: int | None = None,
        wait_seconds: float = 0,
    ) -> _Call[TaskOut | None]:
        body = _drop_none(
            {
                "commands": list(commands) if commands is not None else None,
                "leaseSeconds": lease_seconds,
                "waitSeconds": wait_seconds or None,
            }
        )
        return _Call(
            "POST",
            "/tasks/claim",
            "worker",
            _claimed,
            body=body,
            timeout=self.timeout + wait_seconds,
            done=self.remember,
        )

    def heartbeat(
        self, task: str | TaskOut, *, extend_seconds: int | None = None, lease_id: str | None = None
    ) -> _Call[HeartbeatOut]:
        tid = _task_id(task)
        body = _drop_none({"extendSeconds": extend_seconds, "leaseId": self.lease(tid, lease_id)})
        return _Call(
            "POST",
            f"/tasks/{tid}/heartbeat",
            "worker",
            _as(HeartbeatOut),
            body,
            idempotent=True,
            trace=self.traces.get(tid),
        )

    def abandon(self, task: str | TaskOut, *, lease_id: str | None = None) -> _Call[StatusOut]:
        tid = _task_id(task)
        body = _drop_none({"leaseId": self.lease(tid, lease_id)})
        return _Call(
            "POST",
            f"/tasks/{tid}/abandon",
            "worker",
            _as(StatusOut),
            body,
            done=self.forget(tid),
            trace=self.traces.get(tid),
        )

    def nack(
        self,
        task: str | TaskOut,
        *,
        reason: str | None = None,
        delay_seconds: float | None = None,
        lease_id: str | None = None,
    ) -> _Call[NackOut]:
        tid = _task_id(task)
        body = _drop_none(
            {
                "reason": reason[:4096] if reason is not None else None,
                "delaySeconds": delay_seconds,
                "leaseId": self.lease(tid, lease_id),
            }
        )
        return _Call(
            "POST",
            f"/tasks/{tid}/nack",
            "worker",
            _as(NackOut),
            body,
            done=self.forget(tid),
            trace=self.traces.get(tid),
        )

    def result(
        self,
        task: str | TaskOut,
        *,
        status: Literal["COMPLETED", "FAILED"],
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        artifacts: Iterable[Mapping[str, Any]] | None = None,
        lease_id: str | None = None,
    ) -> _Call[ResultOut]:
        tid = _task_id(task)
        body = _drop_none(
            {
                "status": status,
                "result": dict(result) if result is not None else None,
                "error": error[:4096] if error is not None else None,
                "artifacts": [dict(a) for a in artifacts] if artifacts else None,
                "leaseId": self.lease(tid, lease_id),
            }
        )
        return _Call(
            "POST",
            f"/tasks/{tid}/result",
            "worker",
            _as(ResultOut),
            body,
            done=self.forget(tid),
            trace=self.traces.get(tid),
        )

    def get_task(self, task_id: str) -> _Call[TaskOut]:
        return _Call("GET", f"/tasks/{task_id}", "producer", _as(TaskOut), idempotent=True)

    def get_result(self, task_id: str) -> _Call[TaskWithResultOut]:
        return _Call(
            "GET", f"/tasks/{task_id}/result", "producer", _as(TaskWithResultOut), idempotent=True
        )

    def list_tasks(
        self,
        *,
        status: str | None = None,
        command: str | None = None,
        priority: int | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        idempotency_key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> _Call[TaskListOut]:
        params = _camel(
            {
                "status": status,
                "command": command,
                "priority": priority,
                "created_after": _iso(created_after),
                "created_before": _iso(created_before),
                "idempotency_key": idempotency_key,
                "limit": limit,
                "cursor": cursor,
            }
        )
        return _Call("GET", "/tasks", "producer", _as(TaskListOut), params=params, idempotent=True)

    def task_deliveries(self, task_id: str) -> _Call[Any]:
        return self.send("GET", f"/tasks/{task_id}/deliveries", "producer")

    def task_history(self, task_id: str) -> _Call[TaskHistoryOut]:
        return _Call(
            "GET", f"/tasks/{task_id}/history", "producer", _as(TaskHistoryOut), idempotent=True
        )

    def cancel(self, task_id: str, *, reason: str | None = None) -> _Call[TaskOut]:
        body = _drop_none({"reason": reason})
        # cancelling twice answers the cancelled task again: safe to retry
        return _Call(
            "POST", f"/tasks/{task_id}/cancel", "producer", _as(TaskOut), body, idempotent=True
        )

    def send(
        self, method: str, path: str, auth: Auth, body: Any = None, **params: Any
    ) -> _Call[Any]:
        return _Call(
            method,
            path,
            auth,
            _json,
            body=body,
            params=_drop_none(params) or None,
            idempotent=method in ("GET", "DELETE"),
        )

    # Subscriptions, endpoints and deliveries answer JSON (their shapes: docs/api.md).

    def subscribe(self, callback_url: str, **fields: Any) -> _Call[Any]:
        body = {"callbackUrl": callback_url, **_camel(fields)}
        return self.send("POST", "/workers/subscriptions", "worker", body)

    def create_endpoint(self, url: str, event_types: Iterable[str], **fields: Any) -> _Call[Any]:
        body = {"url": url, "eventTypes": list(event_types), **_camel(fields)}
        return self.send("POST", "/webhooks/endpoints", "producer", body)

    def list_endpoints(self, channel: str | None = None) -> _Call[Any]:
        return self.send("GET", "/webhooks/endpoints", "producer", channel=channel)

    def get_endpoint(self, endpoint_id: str) -> _Call[Any]:
        return self.send("GET", f"/webhooks/endpoints/{endpoint_id}", "producer")

    def update_endpoint(self, endpoint_id: str, **fields: Any) -> _Call[Any]:
        body = _camel(fields)
        return self.send("PATCH", f"/webhooks/endpoints/{endpoint_id}", "producer", body)

    def delete_endpoint(self, endpoint_id: str) -> _Call[Any]:
        return self.send("DELETE", f"/webhooks/endpoints/{endpoint_id}", "producer")

    def test_endpoint(self, endpoint_id: str) -> _Call[Any]:
        # The answer waits for the receiver (webhookTimeoutSeconds, 10 s by default); not
        # repeated on a lost answer (a second test message would be sent).
        path = f"/webhooks/endpoints/{endpoint_id}/test"
        return _Call("POST", path, "producer", _json, timeout=self.timeout + 30.0)

    def rotate_endpoint_secret(self, endpoint_id: str, secret: str | None) -> _Call[Any]:
        body = {"secret": secret} if secret is not None else None
        path = f"/webhooks/endpoints/{endpoint_id}/rotate-secret"
        return self.send("POST", path, "producer", body)

    def endpoint_secret(self, endpoint_id: str) -> _Call[Any]:
        return self.send("GET", f"/webhooks/endpoints/{endpoint_id}/secret", "producer")

    def endpoint_deliveries(self, endpoint_id: str) -> _Call[Any]:
        return self.send("GET", f"/webhooks/endpoints/{endpoint_id}/deliveries", "producer")

    def delivery(self, delivery_id: str) -> _Call[Any]:
        return self.send("GET", f"/deliveries/{delivery_id}", "producer")

    def retry_delivery(self, delivery_id: str) -> _Call[Any]:
        return self.send("POST", f"/deliveries/{delivery_id}/retry", "producer")

    def delivery_dlq(self, limit: int) -> _Call[Any]:
        return self.send("GET", "/admin/deliveries/dlq", "admin", limit=limit)

    def replay_deliveries(self, ids: Iterable[str] | None, limit: int | None) -> _Call[Any]:
        body = {"ids": list(ids)} if ids is not None else _drop_none({"limit": limit})
        return self.send("POST", "/admin/deliveries/dlq/replay", "admin", body)

    def create_replay(
        self,
        *,
        created_after: datetime | str,
        created_before: datetime | str | None = None,
        status: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
    ) -> _Call[Any]:
        body = _drop_none(
            _camel(
                {
                    "created_after": _iso(created_after),
                    "created_before": _iso(created_before),
                    "status": status,
                    "endpoint_id": endpoint_id,
                    "event_type": event_type,
                }
            )
        )
        return self.send("POST", "/webhooks/replays", "producer", body)

    def recover_endpoint(
        self, endpoint_id: str, since: datetime | str, until: datetime | str | None = None
    ) -> _Call[Any]:
        body = _drop_none({"since": _iso(since), "until": _iso(until)})
        return self.send("POST", f"/webhooks/endpoints/{endpoint_id}/recover", "producer", body)

    def replay_job(self, job_id: str) -> _Call[Any]:
        return self.send("GET", f"/webhooks/replays/{job_id}", "producer")

    def replay_jobs(self) -> _Call[Any]:
        return self.send("GET", "/webhooks/replays", "producer")

    def list_deliveries(
        self,
        *,
        status: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        task_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> _Call[Any]:
        params = _camel(
            {
                "status": status,
                "endpoint_id": endpoint_id,
                "event_type": event_type,
                "task_id": task_id,
                "created_after": _iso(created_after),
                "created_before": _iso(created_before),
                "limit": limit,
                "cursor": cursor,
            }
        )
        return _Call("GET", "/deliveries", "producer", _json, params=params, idempotent=True)

    def delivery_counts(self, *, endpoint_id: str | None = None) -> _Call[Any]:
        return self.send("GET", "/deliveries/counts", "producer", endpointId=endpoint_id)

    def endpoint_stats(self, endpoint_id: str) -> _Call[Any]:
        return self.send("GET", f"/webhooks/endpoints/{endpoint_id}/stats", "producer")

    def event_types(self) -> _Call[EventTypeCatalog]:
        return _Call(
            "GET", "/webhooks/event-types", "producer", _as(EventTypeCatalog), idempotent=True
        )

    def queues(self) -> _Call[QueuesOut]:
        return _Call("GET", "/admin/queues", "admin", _as(QueuesOut), idempotent=True)

    def queue_stats(self, command: str) -> _Call[QueueStatsOut]:
        return _Call(
            "GET", f"/admin/queues/{command}", "admin", _as(QueueStatsOut), idempotent=True
        )

    def dlq(self, command: str, *, limit: int = 100, cursor: str | None = None) -> _Call[DlqOut]:
        params = _drop_none({"limit": limit, "cursor": cursor})
        return _Call(
            "GET",
            f"/admin/queues/{command}/dlq",
            "admin",
            _as(DlqOut),
            params=params,
            idempotent=True,
        )

    def requeue(self, command: str, *, ids: Iterable[str] | None = None) -> _Call[RequeueOut]:
        body = {"ids": list(ids)} if ids is not None else {"all": True}
        return _Call("POST", f"/admin/queues/{command}/dlq/requeue", "admin", _as(RequeueOut), body)

    def cleanup(
        self, *, before: datetime | str | None = None, limit: int | None = None
    ) -> _Call[CleanupOut]:
        body = _drop_none({"before": _iso(before), "limit": limit})
        return _Call("POST", "/admin/tasks/cleanup", "admin", _as(CleanupOut), body)


def _tokens(
    token: str | None,
    producer_token: str | None,
    worker_token: str | None,
    admin_token: str | None,
) -> dict[str, str | None]:
    return {
        "default": token,
        "producer": producer_token,
        "worker": worker_token,
        "admin": admin_token,
    }


_USER_AGENT = f"codeq-python/{__version__}"
# Idle connections are dropped before a server with a 5 s keep-alive (uvicorn's default) could
# close them under a request that is being sent: such a request's fate would be unknown.
_KEEPALIVE_EXPIRY = 2.0


class _Methods:
    """The API in one place; ``_run`` is the sync or async transport."""

    _core: _Core

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def lease_id(self, task_id: str) -> str | None:
        """The lease id this client holds for ``task_id`` (from its claim), if any."""
        return self._core.leases.get(task_id)


class CodeQClient(_Methods):
    """Blocking client. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        producer_token: str | None = None,
        worker_token: str | None = None,
        admin_token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(
            base_url.rstrip("/"),
            _tokens(token, producer_token, worker_token, admin_token),
            _Retry(retries),
            timeout,
        )
        self._http = httpx.Client(
            base_url=self._core.base_url + _PREFIX,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _USER_AGENT},
            limits=httpx.Limits(keepalive_expiry=_KEEPALIVE_EXPIRY),
        )

    def __enter__(self) -> CodeQClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ready(self) -> str:
        """``"ready"`` when ``/readyz`` says so, else what went wrong (no retries)."""
        try:
            r = self._http.get(f"{self.base_url}/readyz", timeout=2.0)
        except httpx.TransportError as exc:
            return type(exc).__name__
        return "ready" if r.status_code == 200 else f"HTTP {r.status_code}"

    def _run(self, call: _Call[T]) -> T:
        core = self._core
        for attempt in itertools.count():
            try:
                response = self._http.request(**core.request_args(call))
            except httpx.TransportError as exc:
                time.sleep(core.next_delay(call, attempt, exc, None))
                continue
            if response.status_code < 400:
                return core.answer(call, response)
            time.sleep(core.next_delay(call, attempt, None, response))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- tasks --------------------------------------------------------------------------

    def create_task(self, command: str, payload: Any, **options: Any) -> TaskOut:
        """Create one task (202). ``options``: priority, webhook, max_attempts,
        idempotency_key, run_at, delay_seconds."""
        return self._run(_bind(self._core.create_task, command, payload, **options))

    def create_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> BatchCreateOut:
        """Create up to 1000 tasks (create bodies with camelCase keys) in one request."""
        return self._run(_bind(self._core.create_tasks, tasks))

    def claim(self, commands: Iterable[str] | None = None, **options: Any) -> TaskOut | None:
        """Claim one task, or ``None``. ``options``: lease_seconds, wait_seconds (long poll)."""
        return self._run(_bind(self._core.claim, commands, **options))

    def heartbeat(self, task: str | TaskOut, **options: Any) -> HeartbeatOut:
        return self._run(_bind(self._core.heartbeat, task, **options))

    def abandon(self, task: str | TaskOut, **options: Any) -> StatusOut:
        return self._run(_bind(self._core.abandon, task, **options))

    def nack(self, task: str | TaskOut, **options: Any) -> NackOut:
        return self._run(_bind(self._core.nack, task, **options))

    def complete(
        self, task: str | TaskOut, result: Mapping[str, Any] | None = None, **options: Any
    ) -> ResultOut:
        return self._run(
            _bind(self._core.result, task, status="COMPLETED", result=result or {}, **options)
        )

    def fail(self, task: str | TaskOut, error: str, **options: Any) -> ResultOut:
        return self._run(_bind(self._core.result, task, status="FAILED", error=error, **options))

    def get_task(self, task_id: str) -> TaskOut:
        return self._run(_bind(self._core.get_task, task_id))

    def get_result(self, task_id: str) -> TaskWithResultOut:
        return self._run(_bind(self._core.get_result, task_id))

    def list_tasks(self, **filters: Any) -> TaskListOut:
        """One page of the tenant's tasks, newest first. ``filters``: status (PENDING,
        IN_PROGRESS, COMPLETED, FAILED, DEAD), command, priority, created_after,
        created_before, idempotency_key, limit (1-500), cursor (the ``next_cursor`` of the page
        before)."""
        return self._run(_bind(self._core.list_tasks, **filters))

    def iter_tasks(self, **filters: Any) -> Iterator[TaskOut]:
        """Every task that matches ``filters`` (as :meth:`list_tasks`), following the cursors."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list_tasks(**filters, cursor=cursor)
            yield from page.tasks
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def task_deliveries(self, task_id: str) -> Any:
        """The webhooks a task caused, with their attempts: ``{"deliveries": [...]}``."""
        return self._run(_bind(self._core.task_deliveries, task_id))

    def task_history(self, task_id: str) -> TaskHistoryOut:
        """What happened to a task, oldest first (its newest 32 events and its creation)."""
        return self._run(_bind(self._core.task_history, task_id))

    def cancel(self, task_id: str, *, reason: str | None = None) -> TaskOut:
        """Withdraw a PENDING task: it becomes CANCELLED (Conflict ``not_cancellable`` once a
        worker holds it or it has ended)."""
        return self._run(_bind(self._core.cancel, task_id, reason=reason))

    # -- admin --------------------------------------------------------------------------

    def queues(self) -> QueuesOut:
        return self._run(_bind(self._core.queues))

    def queue_stats(self, command: str) -> QueueStatsOut:
        return self._run(_bind(self._core.queue_stats, command))

    def dlq(self, command: str, **options: Any) -> DlqOut:
        return self._run(_bind(self._core.dlq, command, **options))

    def requeue(self, command: str, **options: Any) -> RequeueOut:
        return self._run(_bind(self._core.requeue, command, **options))

    def cleanup(self, **options: Any) -> CleanupOut:
        return self._run(_bind(self._core.cleanup, **options))

    def event_types(self) -> EventTypeCatalog:
        """Every event type an endpoint may receive: when it is sent, the JSON schema of its
        body and an example (``.event_types``: a list of ``EventTypeInfo``; any token)."""
        return self._run(_bind(self._core.event_types))

    # -- the rest of the API, as JSON -----------------------------------------------------

    def subscribe(self, callback_url: str, **fields: Any) -> Any:
        """A worker subscription (``event_types``, ``ttl_seconds``, ``delivery_mode``, ...)."""
        return self._run(_bind(self._core.subscribe, callback_url, **fields))

    def create_endpoint(self, url: str, event_types: Iterable[str], **fields: Any) -> Any:
        """A webhook endpoint; the answer carries its ``secret``, shown this once."""
        return self._run(_bind(self._core.create_endpoint, url, event_types, **fields))

    def list_endpoints(self, *, channel: str | None = None) -> Any:
        """The tenant's endpoints (``{"endpoints": [...]}``), those with ``channel`` only."""
        return self._run(_bind(self._core.list_endpoints, channel))

    def get_endpoint(self, endpoint_id: str) -> Any:
        return self._run(_bind(self._core.get_endpoint, endpoint_id))

    def update_endpoint(self, endpoint_id: str, **fields: Any) -> Any:
        """Change the fields given (``url``, ``event_types``, ``commands``, ``description``,
        ``enabled``, ``headers``, ``rate_limit``, ``channels``, ``metadata``); an empty map or
        list, or ``rate_limit=0``, removes that field."""
        return self._run(_bind(self._core.update_endpoint, endpoint_id, **fields))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._run(_bind(self._core.delete_endpoint, endpoint_id))

    def test_endpoint(self, endpoint_id: str) -> Any:
        """Send a signed ``webhook.test`` message now; its delivery record (``status``,
        ``attemptLog`` with the answer's ``statusCode``, ``latencyMs`` and ``response``)."""
        return self._run(_bind(self._core.test_endpoint, endpoint_id))

    def rotate_endpoint_secret(self, endpoint_id: str, *, secret: str | None = None) -> Any:
        """A new secret (``secret``: yours, ``whsec_...``) or, for ed25519, key pair; the old
        one keeps signing for 24 hours."""
        return self._run(_bind(self._core.rotate_endpoint_secret, endpoint_id, secret))

    def endpoint_secret(self, endpoint_id: str) -> Any:
        """The current secret (``{"signatureScheme", "secret"}``; ed25519: ``publicKey``)."""
        return self._run(_bind(self._core.endpoint_secret, endpoint_id))

    def endpoint_deliveries(self, endpoint_id: str) -> Any:
        return self._run(_bind(self._core.endpoint_deliveries, endpoint_id))

    def delivery(self, delivery_id: str) -> Any:
        return self._run(_bind(self._core.delivery, delivery_id))

    def retry_delivery(self, delivery_id: str) -> Any:
        return self._run(_bind(self._core.retry_delivery, delivery_id))

    def delivery_dlq(self, *, limit: int = 100) -> Any:
        return self._run(_bind(self._core.delivery_dlq, limit))

    def replay_deliveries(
        self, *, ids: Iterable[str] | None = None, limit: int | None = None
    ) -> Any:
        return self._run(_bind(self._core.replay_deliveries, ids, limit))

    def create_replay(self, **filters: Any) -> Any:
        """Start a replay job: created_after (required), created_before, status (dead by
        default; succeeded sends delivered ones again), endpoint_id, event_type. The job."""
        return self._run(_bind(self._core.create_replay, **filters))

    def recover_endpoint(
        self, endpoint_id: str, since: datetime | str, until: datetime | str | None = None
    ) -> Any:
        """Replay what the endpoint missed (dead and gone deliveries) since ``since``, as a
        job. The endpoint is not re-enabled."""
        return self._run(_bind(self._core.recover_endpoint, endpoint_id, since, until))

    def replay_job(self, job_id: str) -> Any:
        return self._run(_bind(self._core.replay_job, job_id))

    def replay_jobs(self) -> Any:
        return self._run(_bind(self._core.replay_jobs))

    def wait_replay(
        self,
        job_id: str,
        on_progress: Callable[[Any], None] | None = None,
        *,
        interval: float = 0.5,
    ) -> Any:
        """Poll the job until it is done, failed or cancelled; ``on_progress(job)`` after each
        poll. The job as it ended."""
        while True:
            job = self.replay_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in REPLAY_ENDED:
                return job
            time.sleep(interval)

    def list_deliveries(self, **filters: Any) -> Any:
        """One page of the tenant's deliveries, newest first: ``{"deliveries": [...],
        "nextCursor": ...}``, each with its attempts and the request its last attempt sent
        (without the body: :meth:`delivery` has it). ``filters``: status (pending, retrying,
        succeeded, dead, gone), endpoint_id, event_type, task_id, created_after,
        created_before, limit (1-500), cursor (the ``nextCursor`` of the page before)."""
        return self._run(_bind(self._core.list_deliveries, **filters))

    def iter_deliveries(self, **filters: Any) -> Iterator[Any]:
        """Every delivery that matches ``filters`` (as :meth:`list_deliveries`), following
        the cursors."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list_deliveries(**filters, cursor=cursor)
            yield from page["deliveries"]
            if page["nextCursor"] is None:
                return
            cursor = page["nextCursor"]

    def delivery_counts(self, *, endpoint_id: str | None = None) -> Any:
        """How many deliveries the tenant (or one endpoint) has, by status: ``{"counts":
        {"pending": n, "retrying": n, "succeeded": n, "dead": n, "gone": n}, "total": n}``."""
        return self._run(_bind(self._core.delivery_counts, endpoint_id=endpoint_id))

    def endpoint_stats(self, endpoint_id: str) -> Any:
        """An endpoint's attempts over the last hour and day: ``{"lastHour": {...},
        "lastDay": {...}}``, each with attempts, succeeded, failed, successRate and the
        p50/p90/p99 latency in ms."""
        return self._run(_bind(self._core.endpoint_stats, endpoint_id))

    def request(self, method: str, path: str, *, auth: Auth = "producer", body: Any = None) -> Any:
        """Any route under ``/v1/codeq``, as JSON."""
        return self._run(_bind(self._core.send, method, path, auth, body))


class AsyncCodeQClient(_Methods):
    """The same API as :class:`CodeQClient`, awaitable. ``async with`` or :meth:`aclose`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        producer_token: str | None = None,
        worker_token: str | None = None,
        admin_token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _Core(
            base_url.rstrip("/"),
            _tokens(token, producer_token, worker_token, admin_token),
            _Retry(retries),
            timeout,
        )
        self._http = httpx.AsyncClient(
            base_url=self._core.base_url + _PREFIX,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _USER_AGENT},
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=_KEEPALIVE_EXPIRY,
            ),
        )

    async def __aenter__(self) -> AsyncCodeQClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        core = self._core
        for attempt in itertools.count():
            try:
                response = await self._http.request(**core.request_args(call))
            except httpx.TransportError as exc:
                await asyncio.sleep(core.next_delay(call, attempt, exc, None))
                continue
            if response.status_code < 400:
                return core.answer(call, response)
            await asyncio.sleep(core.next_delay(call, attempt, None, response))
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_task(self, command: str, payload: Any, **options: Any) -> TaskOut:
        return await self._run(_bind(self._core.create_task, command, payload, **options))

    async def create_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> BatchCreateOut:
        return await self._run(_bind(self._core.create_tasks, tasks))

    async def claim(self, commands: Iterable[str] | None = None, **options: Any) -> TaskOut | None:
        return await self._run(_bind(self._core.claim, commands, **options))

    async def heartbeat(self, task: str | TaskOut, **options: Any) -> HeartbeatOut:
        return await self._run(_bind(self._core.heartbeat, task, **options))

    async def abandon(self, task: str | TaskOut, **options: Any) -> StatusOut:
        return await self._run(_bind(self._core.abandon, task, **options))

    async def nack(self, task: str | TaskOut, **options: Any) -> NackOut:
        return await self._run(_bind(self._core.nack, task, **options))

    async def complete(
        self, task: str | TaskOut, result: Mapping[str, Any] | None = None, **options: Any
    ) -> ResultOut:
        return await self._run(
            _bind(self._core.result, task, status="COMPLETED", result=result or {}, **options)
        )

    async def fail(self, task: str | TaskOut, error: str, **options: Any) -> ResultOut:
        return await self._run(
            _bind(self._core.result, task, status="FAILED", error=error, **options)
        )

    async def get_task(self, task_id: str) -> TaskOut:
        return await self._run(_bind(self._core.get_task, task_id))

    async def get_result(self, task_id: str) -> TaskWithResultOut:
        return await self._run(_bind(self._core.get_result, task_id))

    async def list_tasks(self, **filters: Any) -> TaskListOut:
        """One page of the tenant's tasks, newest first (see :meth:`CodeQClient.list_tasks`)."""
        return await self._run(_bind(self._core.list_tasks, **filters))

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[TaskOut]:
        """Every task that matches ``filters``, following the cursors."""
        cursor = filters.pop("cursor", None)
        while True:
            page = await self.list_tasks(**filters, cursor=cursor)
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def task_deliveries(self, task_id: str) -> Any:
        """The webhooks a task caused, with their attempts: ``{"deliveries": [...]}``."""
        return await self._run(_bind(self._core.task_deliveries, task_id))

    async def task_history(self, task_id: str) -> TaskHistoryOut:
        """What happened to a task, oldest first (its newest 32 events and its creation)."""
        return await self._run(_bind(self._core.task_history, task_id))

    async def cancel(self, task_id: str, *, reason: str | None = None) -> TaskOut:
        """Withdraw a PENDING task: it becomes CANCELLED (Conflict ``not_cancellable`` once a
        worker holds it or it has ended)."""
        return await self._run(_bind(self._core.cancel, task_id, reason=reason))

    async def queues(self) -> QueuesOut:
        return await self._run(_bind(self._core.queues))

    async def queue_stats(self, command: str) -> QueueStatsOut:
        return await self._run(_bind(self._core.queue_stats, command))

    async def dlq(self, command: str, **options: Any) -> DlqOut:
        return await self._run(_bind(self._core.dlq, command, **options))

    async def requeue(self, command: str, **options: Any) -> RequeueOut:
        return await self._run(_bind(self._core.requeue, command, **options))

    async def cleanup(self, **options: Any) -> CleanupOut:
        return await self._run(_bind(self._core.cleanup, **options))

    async def event_types(self) -> EventTypeCatalog:
        """Every event type an endpoint may receive: when it is sent, the JSON schema of its
        body and an example (``.event_types``: a list of ``EventTypeInfo``; any token)."""
        return await self._run(_bind(self._core.event_types))

    async def subscribe(self, callback_url: str, **fields: Any) -> Any:
        return await self._run(_bind(self._core.subscribe, callback_url, **fields))

    async def create_endpoint(self, url: str, event_types: Iterable[str], **fields: Any) -> Any:
        return await self._run(_bind(self._core.create_endpoint, url, event_types, **fields))

    async def list_endpoints(self, *, channel: str | None = None) -> Any:
        return await self._run(_bind(self._core.list_endpoints, channel))

    async def get_endpoint(self, endpoint_id: str) -> Any:
        return await self._run(_bind(self._core.get_endpoint, endpoint_id))

    async def update_endpoint(self, endpoint_id: str, **fields: Any) -> Any:
        return await self._run(_bind(self._core.update_endpoint, endpoint_id, **fields))

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self._run(_bind(self._core.delete_endpoint, endpoint_id))

    async def test_endpoint(self, endpoint_id: str) -> Any:
        return await self._run(_bind(self._core.test_endpoint, endpoint_id))

    async def rotate_endpoint_secret(self, endpoint_id: str, *, secret: str | None = None) -> Any:
        return await self._run(_bind(self._core.rotate_endpoint_secret, endpoint_id, secret))

    async def endpoint_secret(self, endpoint_id: str) -> Any:
        return await self._run(_bind(self._core.endpoint_secret, endpoint_id))

    async def endpoint_deliveries(self, endpoint_id: str) -> Any:
        return await self._run(_bind(self._core.endpoint_deliveries, endpoint_id))

    async def delivery(self, delivery_id: str) -> Any:
        return await self._run(_bind(self._core.delivery, delivery_id))

    async def retry_delivery(self, delivery_id: str) -> Any:
        return await self._run(_bind(self._core.retry_delivery, delivery_id))

    async def delivery_dlq(self, *, limit: int = 100) -> Any:
        return await self._run(_bind(self._core.delivery_dlq, limit))

    async def replay_deliveries(
        self, *, ids: Iterable[str] | None = None, limit: int | None = None
    ) -> Any:
        return await self._run(_bind(self._core.replay_deliveries, ids, limit))

    async def create_replay(self, **filters: Any) -> Any:
        return await self._run(_bind(self._core.create_replay, **filters))

    async def recover_endpoint(
        self, endpoint_id: str, since: datetime | str, until: datetime | str | None = None
    ) -> Any:
        return await self._run(_bind(self._core.recover_endpoint, endpoint_id, since, until))

    async def replay_job(self, job_id: str) -> Any:
        return await self._run(_bind(self._core.replay_job, job_id))

    async def replay_jobs(self) -> Any:
        return await self._run(_bind(self._core.replay_jobs))

    async def wait_replay(
        self,
        job_id: str,
        on_progress: Callable[[Any], None] | None = None,
        *,
        interval: float = 0.5,
    ) -> Any:
        """Poll the job until it is done, failed or cancelled (see
        :meth:`CodeQClient.wait_replay`)."""
        while True:
            job = await self.replay_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in REPLAY_ENDED:
                return job
            await asyncio.sleep(interval)

    async def list_deliveries(self, **filters: Any) -> Any:
        """One page of the tenant's deliveries (see :meth:`CodeQClient.list_deliveries`)."""
        return await self._run(_bind(self._core.list_deliveries, **filters))

    async def iter_deliveries(self, **filters: Any) -> AsyncIterator[Any]:
        """Every delivery that matches ``filters``, following the cursors."""
        cursor = filters.pop("cursor", None)
        while True:
            page = await self.list_deliveries(**filters, cursor=cursor)
            for delivery in page["deliveries"]:
                yield delivery
            if page["nextCursor"] is None:
                return
            cursor = page["nextCursor"]

    async def delivery_counts(self, *, endpoint_id: str | None = None) -> Any:
        """How many deliveries the tenant (or one endpoint) has, by status."""
        return await self._run(_bind(self._core.delivery_counts, endpoint_id=endpoint_id))

    async def endpoint_stats(self, endpoint_id: str) -> Any:
        """An endpoint's attempts over the last hour and day (see
        :meth:`CodeQClient.endpoint_stats`)."""
        return await self._run(_bind(self._core.endpoint_stats, endpoint_id))

    async def request(
        self, method: str, path: str, *, auth: Auth = "producer", body: Any = None
    ) -> Any:
        return await self._run(_bind(self._core.send, method, path, auth, body))
