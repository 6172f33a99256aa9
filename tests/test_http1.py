"""The deliverers' HTTP/1.1 client (deliverers/http1.py) against real servers on loopback: what
is its own beyond the transport contract (tests/test_transport_contract.py) — keep-alive reuse,
the framings of an answer, draining, a kept connection the server closed, the slots and the
URL/header formatting — and the sender's use of it."""

from __future__ import annotations

import asyncio

import pytest

from deliverers.http1 import DRAIN_LIMIT, HTTP1Pool, Target, _Slots, header_block
from deliverers.sender import TargetPolicy, WebhookSender
from deliverers.transport import ConnectError, InvalidRequest, Response
from tests.conftest import eventually
from tests.test_transport_contract import Request, loopback, ok, raw_server


async def post(pool: HTTP1Pool, url: str, body: bytes = b"{}", limit: float = 5.0) -> Response:
    return await pool.post(
        Target.parse(url), header_block({"X-A": "1"}), body, connect=loopback, time_limit=limit
    )


async def test_keep_alive_reuses_one_connection() -> None:
    pool = HTTP1Pool()
    async with raw_server(ok) as s:
        for _ in range(3):
            r = await post(pool, s.url, b'{"n":1}')
            assert r.status == 200 and r.body == b"ok"
        assert s.connections == 1 and len(s.requests) == 3
        first = s.requests[0]
        assert first.head.startswith(b"POST /hook HTTP/1.1\r\n")
        assert first.header("host") == f"127.0.0.1:{s.port}"
        assert first.header("content-length") == "7" and first.body == b'{"n":1}'
        assert first.header("x-a") == "1"
    await pool.aclose()


@pytest.mark.parametrize(
    ("reply", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", False),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", True),
    ],
    ids=["chunked", "connection-close", "http-1.0", "interim-100"],
)
async def test_answer_shapes(reply: bytes, reused: bool) -> None:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        w.write(reply)
        await w.drain()
        return reused  # a server that said close does close

    pool = HTTP1Pool()
    async with raw_server(answer) as s:
        for _ in range(2):
            r = await post(pool, s.url)
            assert r.status in (200, 201) and r.body == b"abc"
        assert s.connections == (1 if reused else 2)
    await pool.aclose()


async def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 500 Oops\r\nRetry-After: 3\r\n\r\nsomething broke")
        await w.drain()
        return False

    pool = HTTP1Pool()
    async with raw_server(answer) as s:
        r = await post(pool, s.url)
        assert r.status == 500 and r.body == b"something broke"
        assert r.headers["retry-after"] == "3"
    await pool.aclose()


async def test_only_the_first_bytes_are_kept_and_a_huge_body_is_not_drained() -> None:
    sizes = [1000, DRAIN_LIMIT * 4, 10]

    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        n = sizes[len(s.requests) - 1]
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n)
        await w.drain()
        return True

    pool = HTTP1Pool()
    async with raw_server(answer) as s:
        small = await post(pool, s.url)
        big = await post(pool, s.url)
        assert small.body == b"x" * 256 and big.body == b"x" * 256
        third = await post(pool, s.url)  # the drained one was reused, the huge one dropped
        assert third.body == b"x" * 10
        assert [r.connection for r in s.requests] == [0, 0, 1]
    await pool.aclose()


async def test_a_backlog_for_one_slow_host_leaves_room_for_others() -> None:
    release = asyncio.Event()

    async def slow(req: Request, w: asyncio.StreamWriter) -> bool:
        await release.wait()
        return await ok(req, w)

    pool = HTTP1Pool(limit=2, per_host=1)
    async with raw_server(slow) as stuck, raw_server(ok) as fine:
        queued = [asyncio.create_task(post(pool, stuck.url, limit=10)) for _ in range(4)]

        async def one_in_flight() -> bool:
            return len(stuck.requests) == 1

        await eventually(one_in_flight)
        r = await post(pool, fine.url, limit=2)  # not behind the three waiting for `stuck`
        assert r.status == 200
        release.set()
        assert [x.status for x in await asyncio.gather(*queued)] == [200] * 4
    await pool.aclose()


async def test_a_kept_connection_closed_by_the_server_is_replaced_once() -> None:
    """The server answers, keeps the connection, then drops it when the next request comes
    (as when its keep-alive timeout and our write cross): the request goes again on a new
    connection, and only when nothing of an answer had arrived."""

    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        if len([r for r in s.requests if r.connection == req.connection]) == 2:
            return False  # second request on a connection: close without a word
        await ok(req, w)
        return True

    pool = HTTP1Pool()
    async with raw_server(answer) as s:
        assert (await post(pool, s.url)).status == 200
        assert (await post(pool, s.url)).status == 200
        assert s.connections == 2 and [r.connection for r in s.requests] == [0, 0, 1]
    await pool.aclose()


async def test_a_kept_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        await ok(req, w)
        return False  # closes after answering, without having said so

    pool = HTTP1Pool()
    async with raw_server(answer) as s:
        assert (await post(pool, s.url)).status == 200

        async def noticed() -> bool:
            return all(c.closed for o in pool._origins.values() for c in o.idle)

        await eventually(noticed)
        assert (await post(pool, s.url)).status == 200
        assert [r.connection for r in s.requests] == [0, 1]
    await pool.aclose()


async def test_idle_connections_age_out() -> None:
    pool = HTTP1Pool(idle_seconds=4.0)
    async with raw_server(ok) as s:
        await post(pool, s.url)
        for origin in pool._origins.values():  # as if 10 s had passed
            for conn in origin.idle:
                conn.idle_since -= 10
        await post(pool, s.url)
        assert s.connections == 2
    await pool.aclose()


async def test_an_origin_that_only_failed_is_forgotten() -> None:
    async with raw_server(ok) as s:
        url = s.url
    pool = HTTP1Pool()
    with pytest.raises(ConnectError):
        await post(pool, url)
    assert pool._origins == {}
    await pool.aclose()


def test_targets_and_headers() -> None:
    t = Target.parse("https://user:p%40ss@Hooks.Example.com/a%20b/c?x=1&y=é")
    assert t.origin == ("https", "hooks.example.com", 443)
    assert t.head.startswith(b"POST /a%20b/c?x=1&y=%C3%A9 HTTP/1.1\r\nHost: hooks.example.com\r\n")
    assert b"Authorization: Basic dXNlcjpwQHNz\r\n" in t.head  # user:p@ss
    v6 = Target.parse("http://[::1]:8080/")
    assert v6.origin == ("http", "::1", 8080) and b"Host: [::1]:8080\r\n" in v6.head
    assert b"Host: x.test\r\n" in Target.parse("http://x.test").head
    idn = Target.parse("http://bücher.example/x")  # the DNS form, in the Host header too
    assert idn.host == "xn--bcher-kva.example" and b"Host: xn--bcher-kva.example\r\n" in idn.head
    for bad_name in ("http://a..b.example/", "http://" + "a" * 64 + ".example/"):
        with pytest.raises(InvalidRequest, match="valid host name"):
            Target.parse(bad_name)
    for bad in ("ftp://x/y", "http:///nohost", "http://x:99999/", "http://x:0/"):
        with pytest.raises(InvalidRequest, match=r"(?i)http|host|port"):
            Target.parse(bad)
    assert header_block({"A": "1", "B-c": "two words"}) == b"A: 1\r\nB-c: two words\r\n"
    for name, value in (("X", "a\r\nInjected: 1"), ("Bad Name", "1"), ("X", "a\nb"), ("", "1")):
        with pytest.raises(InvalidRequest, match="cannot be sent"):
            header_block({name: value})


async def test_the_sender_refuses_a_header_that_would_split_the_request() -> None:
    sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
    async with raw_server(ok) as s:
        attempt = await sender.send(s.url, b"{}", {"X-Event": "a\r\nX-Evil: 1"})
        assert attempt.refused and attempt.error and attempt.error.startswith("invalid")
        assert s.requests == []
    await sender.aclose()


async def test_slots_go_to_waiters_in_order_and_a_waiter_gives_up_at_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    slots = _Slots(1)
    await slots.take(loop.time() + 5)
    got: list[str] = []

    async def waiter(name: str, limit: float) -> None:
        await slots.take(loop.time() + limit)
        got.append(name)

    a = asyncio.create_task(waiter("a", 5))
    dropped = asyncio.create_task(waiter("dropped", 5))
    b = asyncio.create_task(waiter("b", 5))
    late = asyncio.create_task(waiter("late", 0.05))
    with pytest.raises(TimeoutError):
        await late  # every waiter is queued by now
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    slots.give()
    await a
    slots.give()  # passes over the cancelled and the timed-out waiter
    await b
    assert got == ["a", "b"]
    slots.give()
    slots.give()
    await slots.take(loop.time() + 0.01)  # two free slots, no waiting
    await slots.take(loop.time() + 0.01)
    with pytest.raises(TimeoutError):
        await slots.take(loop.time() + 0.01)


async def test_a_retry_after_that_is_not_a_number_is_ignored() -> None:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        return True

    sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
    async with raw_server(answer) as s:
        attempt = await sender.send(s.url, b"{}", {})
        assert attempt.status_code == 503 and attempt.retry_after_seconds is None
    await sender.aclose()


async def test_a_host_name_that_cannot_be_looked_up_is_an_invalid_target() -> None:
    sender = WebhookSender(TargetPolicy([]))
    attempt = await sender.send("http://a..b.example/hook", b"{}", {})
    # refused before any lookup (codeq.webhooks.target_problem): no retry can help
    assert attempt.refused and attempt.error and "host name" in attempt.error
    await sender.aclose()
