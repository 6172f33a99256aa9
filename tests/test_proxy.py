"""Webhooks through an egress proxy (issue 18 item 10): ``webhookProxyUrl`` sends every webhook
through an HTTP CONNECT proxy, and the SSRF rules still hold for the final target.

A real CONNECT proxy runs on loopback (:func:`connect_proxy`, also the proxy of the transport
contract suite); it records what it was asked to CONNECT to and tunnels to it. Deliveries go
to a real receiver through it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.settings import Settings, SettingsError
from codeq.store.redis_store import RedisStore
from deliverers import records
from deliverers.proxy import Proxy, ProxyTransport, webhook_transport
from deliverers.runner import Deliverer, webhook_sender
from deliverers.transport import ConnectError
from tests.conftest import eventually, make_store
from tests.receivers import Receiver, receiver
from tests.servers import free_port

# -- the proxy ----------------------------------------------------------------------------


@dataclass
class Asked:
    """One request the proxy got: its method, target and ``Proxy-Authorization``."""

    method: str
    authority: str
    authorization: str | None


@dataclass
class ConnectProxy:
    """A small HTTP CONNECT proxy: tunnels to what it is asked (502 when it cannot connect),
    wants ``credentials`` (``user:password``) when given (407 otherwise)."""

    credentials: str | None = None
    asked: list[Asked] = field(default_factory=list)
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._tunnel(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, authority, _version = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        authorization = headers.get("proxy-authorization")
        self.asked.append(Asked(method, authority, authorization))
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if self.credentials is not None:
            wanted = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if authorization != wanted:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="egress"\r\nContent-Length: 0\r\n\r\n'
                )
                return
        host, _, port = authority.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self._writers.add(up_writer)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)

    async def close(self) -> None:
        """Close every connection; the tunnels end as their pipes see it."""
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until one side ends, then close the other (so an end travels through)."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except ConnectionError:
        pass
    finally:
        dst.close()


@contextlib.asynccontextmanager
async def connect_proxy(
    credentials: str | None = None, port: int = 0
) -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy(credentials)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        await proxy.close()
        await server.wait_closed()


# -- settings -----------------------------------------------------------------------------


def test_the_setting_selects_the_proxy_transport() -> None:
    plain = webhook_transport(Settings())
    assert not isinstance(plain, ProxyTransport)
    proxied = webhook_transport(Settings.from_mapping({"webhookProxyUrl": "http://egress:3128"}))
    assert isinstance(proxied, ProxyTransport)
    assert (proxied.proxy.host, proxied.proxy.port, proxied.proxy.authorization) == (
        "egress",
        3128,
        None,
    )


BAD_PROXY_URLS = [
    "https://u:s3cr3t-pw@egress:3128",  # TLS to the proxy: not supported
    "socks5://u:s3cr3t-pw@egress:1080",
    "http://u:s3cr3t-pw@egress",  # no port
    "http://u:s3cr3t-pw@egress:0",
    "http://u:s3cr3t-pw@egress:3128/path",
    "http://u:s3cr3t-pw@egress:3128?x=1",
    "http://u:s3cr3t-pw@:3128",
    "http://s3cr3t-pw@egress",  # a user name alone (a token) and no port
    "s3cr3t-pw@egress:3128",
    "egress:3128",
]


@pytest.mark.parametrize("url", BAD_PROXY_URLS)
def test_a_bad_proxy_url_stops_the_start_naming_the_setting_not_the_password(url: str) -> None:
    loads: list[Callable[[], Settings]] = [
        lambda: Settings.from_mapping({"webhookProxyUrl": url}),
        lambda: Settings.load(None, {"WEBHOOK_PROXY_URL": url}),
    ]
    for load in loads:
        with pytest.raises(SettingsError) as caught:
            load()
        message = str(caught.value)
        assert "webhookProxyUrl" in message and "WEBHOOK_PROXY_URL" in message
        assert "s3cr3t-pw" not in message


@pytest.mark.parametrize(
    "url", [*BAD_PROXY_URLS, "http://egress:3128/path", "http://egress:3128#x", "http://egress"]
)
def test_the_transport_reads_the_proxy_url_as_the_settings_check_it(url: str) -> None:
    """One reading of ``webhookProxyUrl`` (``codeq.webhooks.parse_proxy_url``): what the
    settings refuse, the transport refuses too, never showing the user info."""
    with pytest.raises(SettingsError):
        Settings.from_mapping({"webhookProxyUrl": url})
    with pytest.raises(ValueError, match="webhookProxyUrl") as caught:
        Proxy.parse(url)
    assert "s3cr3t-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown", "credentials"),
    [
        (
            "http://egress-user:s3cr3t-pw@egress:3128",
            "http://***@egress:3128",
            "egress-user:s3cr3t-pw",
        ),
        ("http://s3cr3t-pw@egress:3128", "http://***@egress:3128", "s3cr3t-pw:"),  # a token
        ("http://:s3cr3t-pw@egress:3128/", "http://***@egress:3128/", ":s3cr3t-pw"),
    ],
)
def test_the_proxy_user_info_is_never_shown(url: str, shown: str, credentials: str) -> None:
    settings = Settings.load(None, {"WEBHOOK_PROXY_URL": url})
    assert settings.masked()["webhookProxyUrl"] == shown
    assert "s3cr3t-pw" not in repr(settings)
    transport = webhook_transport(settings)
    assert isinstance(transport, ProxyTransport)
    assert "s3cr3t-pw" not in repr(transport) and "s3cr3t-pw" not in repr(transport.proxy)
    assert (
        transport.proxy.authorization == "Basic " + base64.b64encode(credentials.encode()).decode()
    )


def test_the_proxy_password_is_never_shown() -> None:
    settings = Settings.load(
        None, {"WEBHOOK_PROXY_URL": "http://egress-user:s3cr3t-pw@egress:3128"}
    )
    assert settings.masked()["webhookProxyUrl"] == "http://***@egress:3128"
    assert "s3cr3t-pw" not in repr(settings)
    transport = webhook_transport(settings)
    assert isinstance(transport, ProxyTransport)
    assert "s3cr3t-pw" not in repr(transport) and "s3cr3t-pw" not in repr(transport.proxy)
    assert (
        transport.proxy.authorization
        == "Basic " + base64.b64encode(b"egress-user:s3cr3t-pw").decode()
    )


def test_user_info_is_percent_decoded() -> None:
    proxy = Proxy.parse("http://us%3Aer:p%40ss%20w@127.0.0.1:3128")
    assert proxy.authorization == "Basic " + base64.b64encode(b"us:er:p@ss w").decode()
    assert proxy.connect_request("::1", 443) == (
        b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"
        b"Proxy-Authorization: " + proxy.authorization.encode() + b"\r\n\r\n"
    )


# -- attempts through the proxy -----------------------------------------------------------


def is_ip_authority(authority: str) -> bool:
    host = authority.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def test_an_attempt_goes_through_a_tunnel_to_the_checked_address() -> None:
    """The proxy is asked for the address the sender checked, never the name; the receiver
    sees the URL's name in ``Host`` and no proxy credentials."""
    async with connect_proxy("egress:pw") as proxy:
        settings = Settings.from_mapping(
            {
                "webhookProxyUrl": f"http://egress:pw@127.0.0.1:{proxy.port}",
                "webhookAllowedCidrs": ["127.0.0.0/8", "::1/128"],
            }
        )
        sender = webhook_sender(settings)
        try:
            with receiver() as r:
                port = r.url.rsplit(":", 1)[1].split("/")[0]
                url = f"http://localhost:{port}/hook"
                attempt = await sender.send(url, b'{"n":1}', {"Webhook-Id": "msg_1"})
                assert attempt.ok, attempt.error
                [got] = r.received
                assert got.headers["host"] == f"localhost:{port}"
                assert got.headers["webhook-id"] == "msg_1" and got.body == b'{"n":1}'
                assert "proxy-authorization" not in got.headers
        finally:
            await sender.aclose()
        assert proxy.asked, "nothing went through the proxy"
        assert all(a.method == "CONNECT" and is_ip_authority(a.authority) for a in proxy.asked)
        assert proxy.asked[-1].authority == f"127.0.0.1:{port}"
        expected = "Basic " + base64.b64encode(b"egress:pw").decode()
        assert all(a.authorization == expected for a in proxy.asked)


@pytest.mark.parametrize(
    "url", ["http://localhost:{port}/hook", "http://127.0.0.1:{port}/hook", "http://10.1.2.3/x"]
)
async def test_a_refused_target_is_refused_before_any_connect(url: str) -> None:
    async with connect_proxy() as proxy:
        sender = webhook_sender(Settings.from_mapping({"webhookProxyUrl": proxy.url}))
        try:
            with receiver() as r:
                port = r.url.rsplit(":", 1)[1].split("/")[0]
                attempt = await sender.send(url.format(port=port), b"{}", {})
                assert attempt.refused and attempt.error and attempt.error.startswith("refused")
                assert r.received == []
        finally:
            await sender.aclose()
        assert proxy.asked == []


async def test_proxy_credentials_missing_or_wrong_fail_the_attempt_without_a_request() -> None:
    async with connect_proxy("egress:right-pw") as proxy:
        for user_info in ("", "egress:wrong-pw@"):
            url = f"http://{user_info}127.0.0.1:{proxy.port}"
            transport = ProxyTransport(url)
            sender = webhook_sender(
                Settings.from_mapping(
                    {"webhookProxyUrl": url, "webhookAllowedCidrs": ["127.0.0.0/8"]}
                )
            )
            try:
                with receiver() as r:
                    with pytest.raises(ConnectError, match="407") as caught:
                        await transport.send(
                            r.url, {}, b"{}", connect=loopback, time_limit=5, keep=0
                        )
                    assert "wrong-pw" not in str(caught.value)
                    attempt = await sender.send(r.url, b"{}", {})
                    assert not attempt.ok and not attempt.refused and not attempt.busy
                    assert attempt.error and "407" in attempt.error
                    assert "wrong-pw" not in attempt.error
                    assert r.received == []
            finally:
                await transport.aclose()
                await sender.aclose()
        assert proxy.asked and all(a.method == "CONNECT" for a in proxy.asked)


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def test_a_proxy_that_is_down_is_a_failed_attempt_to_retry() -> None:
    port = free_port()  # nothing listens there
    settings = Settings.from_mapping(
        {"webhookProxyUrl": f"http://127.0.0.1:{port}", "webhookAllowedCidrs": ["127.0.0.0/8"]}
    )
    sender = webhook_sender(settings)
    try:
        with receiver() as r:
            attempt = await sender.send(r.url, b"{}", {})
            assert not attempt.ok and not attempt.refused and not attempt.busy
            assert attempt.error and attempt.error.startswith(f"connect: proxy 127.0.0.1:{port}")
            assert r.received == []
    finally:
        await sender.aclose()


# -- deliveries through the proxy ---------------------------------------------------------


@pytest.fixture(params=["redis", "kvrocks"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


def deliverer_settings(proxy_port: int) -> Settings:
    return Settings.from_mapping(
        {
            "webhookHmacSecret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "webhookAllowedCidrs": ["127.0.0.0/8"],
            "webhookRetrySchedule": [0.2] * 20,  # ~4 s of retries: time to start the proxy
            "webhookTimeoutSeconds": 2,
            "webhookProxyUrl": f"http://127.0.0.1:{proxy_port}",
        }
    )


async def finish(engine: Engine, webhook: str) -> str:
    t = (await engine.create("acme", NewTask(command="render", payload="1", webhook=webhook))).task
    claimed = await engine.claim("acme", "w1", ["render"])
    assert claimed is not None
    await engine.complete("acme", t.id, "w1", result='{"pages":3}', lease_id=claimed.lease_id)
    return t.id


async def wait_count(r: Receiver, n: int) -> None:
    async def enough() -> bool:
        return r.count() >= n

    await eventually(enough, timeout=10)


async def test_result_callbacks_arrive_through_the_proxy(store: RedisStore) -> None:
    async with connect_proxy() as proxy:
        d = Deliverer(store, deliverer_settings(proxy.port), block_ms=100, scan_interval=0.05)
        assert isinstance(d.sender.transport, ProxyTransport)
        await d.start()
        try:
            with receiver() as r:
                task_id = await finish(Engine(store, EngineConfig()), r.url)
                await wait_count(r, 1)
                body = json.loads(r.received[0].body)
                assert body["taskId"] == task_id and body["status"] == "COMPLETED"
                port = r.url.rsplit(":", 1)[1].split("/")[0]
                assert [a.authority for a in proxy.asked] == [f"127.0.0.1:{port}"]
        finally:
            await d.stop()


async def test_a_delivery_waits_out_a_proxy_outage(store: RedisStore) -> None:
    """Attempts while the proxy is down fail (logged, retried by the schedule); the delivery
    arrives once it is back."""
    port = free_port()
    d = Deliverer(store, deliverer_settings(port), block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            task_id = await finish(Engine(store, EngineConfig()), r.url)

            async def failed_attempt() -> records.Delivery | None:
                for raw in await store.deliveries.of_task(0, "acme", task_id, limit=10) or []:
                    delivery = records.decode(raw)
                    if delivery.log and delivery.log[-1].error:
                        return delivery
                return None

            down = await eventually(failed_attempt, timeout=10)
            error = down.log[-1].error or ""
            assert error.startswith(f"connect: proxy 127.0.0.1:{port}"), error
            assert down.status == "retrying" and r.received == []
            async with connect_proxy(port=port) as proxy:
                await wait_count(r, 1)
                assert proxy.asked
            assert json.loads(r.received[0].body)["taskId"] == task_id
    finally:
        await d.stop()
