"""Where webhooks may go (spec 03 "Target safety"): private, loopback, link-local and metadata
addresses are refused unless allowed, the connection goes to the checked address, redirects are
not followed, and a slow host does not hold up another. Real receivers on loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from deliverers.sender import TargetPolicy, TargetRefused, WebhookSender
from tests.receivers import Reply, receiver


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/x",
        "http://192.168.1.10/x",
        "http://100.64.0.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://localhost:9/x",
        "ftp://example.com/x",
        "http://[2002:7f00:1::1]:9/x",  # 6to4 carrying 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 carrying 169.254.169.254
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",  # Teredo carrying 127.0.0.1
    ],
)
async def test_unsafe_targets_are_refused_and_logged(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = WebhookSender(TargetPolicy([]))
    try:
        with caplog.at_level(logging.WARNING, logger="codeq.deliverers"):
            attempt = await sender.send(url, b"{}", {})
        assert attempt.refused and not attempt.ok and attempt.status_code is None
        assert attempt.error and attempt.error.startswith("refused")
        if not url.startswith("ftp"):
            assert any("refused" in r.getMessage() for r in caplog.records)
    finally:
        await sender.aclose()


async def test_a_refused_target_receives_nothing() -> None:
    with receiver() as r:
        sender = WebhookSender(TargetPolicy([]))
        try:
            attempt = await sender.send(r.url, b"{}", {})
            by_name = await sender.send(r.url.replace("127.0.0.1", "localhost"), b"{}", {})
        finally:
            await sender.aclose()
        assert attempt.refused and by_name.refused
        assert r.count() == 0


async def test_allowed_cidrs_open_loopback() -> None:
    with receiver() as r:
        sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
        try:
            by_ip = await sender.send(r.url, b'{"a":1}', {"X-Test": "1"})
            by_name = await sender.send(r.url.replace("127.0.0.1", "localhost"), b"{}", {})
        finally:
            await sender.aclose()
        assert by_ip.ok and by_ip.status_code == 200
        assert r.received[0].body == b'{"a":1}' and r.received[0].headers["x-test"] == "1"
        # by name: resolved and checked once, connected to that address, Host kept
        if by_name.ok:
            assert r.received[1].headers["host"].startswith("localhost:")
        else:  # localhost resolved to ::1 first on this machine, outside 127.0.0.0/8
            assert by_name.refused


async def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolves to an allowed address at check time is connected to *that*
    address: the check is the client's resolver, so no second lookup can differ."""
    with receiver() as r:
        port = int(r.url.split(":")[2].split("/")[0])
        policy = TargetPolicy(["127.0.0.0/8"])
        lookups: list[str] = []

        async def resolve(host: str, p: int) -> list[str]:
            lookups.append(host)
            return ["127.0.0.1"]

        monkeypatch.setattr(policy, "resolve", resolve)
        sender = WebhookSender(policy)
        try:
            attempt = await sender.send(f"http://hooks.example.test:{port}/hook", b"{}", {})
        finally:
            await sender.aclose()
        assert attempt.ok, attempt.error
        assert lookups == ["hooks.example.test"]  # one resolution: the checked one
        assert r.received[0].headers["host"] == f"hooks.example.test:{port}"


async def test_a_name_that_resolves_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = TargetPolicy([])

    async def resolve(host: str, p: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]  # one bad address is enough

    monkeypatch.setattr(policy, "resolve", resolve)
    sender = WebhookSender(policy)
    try:
        attempt = await sender.send("http://rebind.example.test/hook", b"{}", {})
    finally:
        await sender.aclose()
    assert attempt.refused
    with pytest.raises(TargetRefused):
        await policy.check("http://rebind.example.test/hook")


async def test_redirects_are_not_followed() -> None:
    with receiver() as target, receiver() as r:
        r.script = [Reply(302, {"Location": target.url})]
        sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
        try:
            attempt = await sender.send(r.url, b"{}", {})
        finally:
            await sender.aclose()
        assert attempt.status_code == 302 and not attempt.ok
        assert target.count() == 0


async def test_retry_after_and_timeouts() -> None:
    with receiver() as r:
        r.script = [Reply(503, {"Retry-After": "7"}), Reply(200, delay=1.0)]
        sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]), timeout=0.3)
        try:
            first = await sender.send(r.url, b"{}", {})
            second = await sender.send(r.url, b"{}", {})
        finally:
            await sender.aclose()
        assert first.status_code == 503 and first.retry_after_seconds == 7.0
        assert second.status_code is None and second.error == "timeout"


async def test_a_slow_host_does_not_delay_another() -> None:
    with receiver("127.0.0.1") as slow, receiver("127.0.0.2") as fast:
        slow.default = Reply(200, delay=1.0)
        sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]), per_host_concurrency=2)
        try:
            stuck = [asyncio.create_task(sender.send(slow.url, b"{}", {})) for _ in range(6)]

            started = time.monotonic()
            quick = await sender.send(fast.url, b"{}", {})
            took = time.monotonic() - started
            assert quick.ok and took < 0.5, took
            results = await asyncio.gather(*stuck)
            assert all(x.ok for x in results)
            # per-host bound: the slow host never saw more than 2 at once
            starts = sorted(x.at for x in slow.received)
            assert len(starts) == 6 and starts[2] - starts[0] >= 0.9
        finally:
            await sender.aclose()


async def test_a_failed_lookup_is_a_retryable_failure_not_a_refusal() -> None:
    sender = WebhookSender(TargetPolicy([]))
    try:
        attempt = await sender.send("http://no-such-host.invalid/hook", b"{}", {})
    finally:
        await sender.aclose()
    assert not attempt.ok and not attempt.refused and attempt.status_code is None
    assert attempt.error and attempt.error.startswith("connect:")
