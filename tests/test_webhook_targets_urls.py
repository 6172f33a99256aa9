"""Where webhooks may go, decided in one place (issue 15 item 6): ``target_problem`` refuses
URLs with spaces or control characters, applies ``webhookRequireHttps`` and refuses addresses
that reach private networks, including through 6to4, Teredo and NAT64; endpoints and worker
subscriptions run it at create/update, task webhooks at create (400 naming the field, nothing
saved), the sender before every attempt."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from codeq.webhooks import address_problem, allowed_networks, target_problem
from deliverers.sender import TargetPolicy, WebhookSender
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import make_store
from tests.test_api import PRODUCER, WORKER, auth, error_of, make_settings

ENDPOINTS = "/v1/codeq/webhooks/endpoints"
SUBSCRIPTIONS = "/v1/codeq/workers/subscriptions"
TASKS = "/v1/codeq/tasks"
NONE = allowed_networks([])

# --- the check itself ---------------------------------------------------------------------

HOSTILE_CHARACTERS = [
    "https://hooks.example.com/a\r\nX-Injected: 1",
    "https://hooks.example.com/a\nb",
    "https://hooks.example.com/a\rb",
    "https://hooks.example.com/a\x00b",
    "https://hooks.example.com/a b",
    "https://hooks.example.com/a\tb",
    "https://hooks.example.com/a\x7fb",
    "https://hooks.example.com/a\x85b",
    "https://hooks.example.com/a\u2028b",
    "https://hooks.example.com/a\u202eb",  # a bidi override: shows one URL, is another
    "https://hooks.example.com/a\u00a0b",
    " https://hooks.example.com/a",  # urlsplit strips these silently
    "https://hooks.example.com/a\r\n",
    "https://hooks.exa mple.com/a",
    "https://hooks.example.com\x00.evil.example/a",
]


@pytest.mark.parametrize("url", HOSTILE_CHARACTERS)
def test_spaces_and_control_characters_are_refused(url: str) -> None:
    assert target_problem(url) == "must not contain spaces or control characters"
    assert target_problem(url, allowed=NONE) == "must not contain spaces or control characters"


def test_percent_encoded_and_international_urls_pass() -> None:
    for url in (
        "https://hooks.example.com/a%20b?c=%0D%0A",
        "https://bücher.example/é?x=ü",
        "https://user:p%40ss@hooks.example.com:8443/x#frag",
    ):
        assert target_problem(url, allowed=NONE) is None, url


def test_length_is_capped() -> None:
    base = "https://hooks.example.com/"
    assert target_problem(base + "a" * (2048 - len(base)), allowed=NONE) is None
    assert target_problem(base + "a" * (2049 - len(base))) == "must be at most 2048 characters"


def test_require_https() -> None:
    assert target_problem("https://hooks.example.com/", require_https=True) is None
    assert target_problem("http://hooks.example.com/", require_https=True) == (
        "must be an https URL (webhookRequireHttps)"
    )
    assert target_problem("http://hooks.example.com/") is None


@pytest.mark.parametrize(
    "url", ["http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/", "http://017700000001/"]
)
def test_ipv4_in_another_form_is_refused(url: str) -> None:
    """A resolver reads each of these as 127.0.0.1; none is a dotted quad."""
    assert target_problem(url) == "must write an IPv4 address as four decimal numbers"


TRANSLATED = [
    # 6to4: 2002:WWXX:YYZZ::/48 carries WW.XX.YY.ZZ
    ("2002:7f00:1::1", "6to4 (loopback)"),
    ("2002:a00:1::", "6to4 (private)"),
    ("2002:c0a8:101::", "6to4 (private)"),
    ("2002:a9fe:a9fe::", "6to4 (link-local)"),  # 169.254.169.254, the metadata service
    ("2002:6440:1::", "6to4 (shared address space)"),
    ("2002:e000:1::", "6to4 (multicast)"),
    ("2002::", "6to4 (unspecified)"),
    # Teredo: 2001:0:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff>
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo (loopback)"),  # client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo (private)"),  # client 10.0.0.1
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "Teredo (private)"),  # server 10.0.0.1
    # NAT64 well-known prefix: the last 32 bits
    ("64:ff9b::7f00:1", "NAT64 (loopback)"),
    ("64:ff9b::a00:1", "NAT64 (private)"),
    ("64:ff9b::a9fe:a9fe", "NAT64 (link-local)"),
    ("64:ff9b::", "NAT64 (unspecified)"),
]


@pytest.mark.parametrize(("address", "kind"), TRANSLATED)
def test_translated_addresses_are_judged_by_the_ipv4_they_carry(address: str, kind: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == kind
    assert (
        target_problem(f"https://[{address}]/hook", allowed=NONE) == f"must not be a {kind} address"
    )


@pytest.mark.parametrize(
    "address",
    [
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, server and client public
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8 (an IPv6-only cluster reaching an IPv4 host)
        "8.8.8.8",
        "2606:4700:4700::1111",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("100.64.0.1", "shared address space"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_private_addresses_are_refused(address: str, kind: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == kind


def test_allowed_networks_open_what_they_list() -> None:
    loopback = allowed_networks(["127.0.0.0/8"])
    assert address_problem(ipaddress.ip_address("127.0.0.5"), loopback) is None
    assert address_problem(ipaddress.ip_address("::ffff:127.0.0.5"), loopback) is None
    assert address_problem(ipaddress.ip_address("10.0.0.1"), loopback) == "private"
    assert target_problem("http://127.0.0.1:9/x", allowed=loopback) is None
    assert target_problem("http://127.0.0.1:9/x", allowed=NONE) == (
        "must not be a loopback address"
    )
    for name in ("localhost", "LocalHost.", "hooks.localhost"):
        assert target_problem(f"http://{name}:9/x", allowed=NONE) == (
            "must not be a loopback address"
        )
    dev = allowed_networks([], loopback=True)
    assert target_problem("http://localhost:9/x", allowed=dev) is None
    assert target_problem("http://[::1]:9/x", allowed=dev) is None
    # names are resolved (and their addresses pinned) by the sender, not here
    assert target_problem("https://hooks.example.com/x", allowed=NONE) is None


async def test_the_sender_refuses_what_the_check_refuses() -> None:
    """The send-time path parses targets with the same check: a header injected through the
    URL never reaches a socket (urlsplit alone would drop the CR LF and send it on)."""
    sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
    try:
        for url in ("http://127.0.0.1:9/a\r\nX-Injected: 1", "http://127.1:9/a"):
            attempt = await sender.send(url, b"{}", {})
            assert attempt.refused and not attempt.ok, url
            assert attempt.status_code is None
    finally:
        await sender.aclose()


# --- the API: endpoints and worker subscriptions -------------------------------------------


@asynccontextmanager
async def api(
    request: pytest.FixtureRequest, kind: str, tmp: Path, **extra: Any
) -> AsyncIterator[ApiClient]:
    prefix = "wt" + uuid.uuid4().hex[:10]
    app = create_app(
        make_settings(tmp, prefix, **extra), store=make_store(request, kind, prefix),
        close_store=True,
    )  # fmt: skip
    async with serve_in_process(app) as c:
        yield c


Factory = Callable[..., Any]


@pytest.fixture(params=["embedded", "redis"])
def open_api(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    def factory(**extra: Any) -> Any:
        # nothing allowed unless the test says so (whatever the suite's defaults become)
        return api(request, request.param, tmp_path, **{"webhookAllowedCidrs": [], **extra})

    return factory


REFUSED_AT_CREATE = [
    *HOSTILE_CHARACTERS[:6],
    "http://127.0.0.1:9/hook",
    "http://localhost:9/hook",
    "http://10.0.0.7/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:192.168.0.1]/hook",
    "http://[2002:a9fe:a9fe::]/hook",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://2130706433/hook",
    "https://hooks.example.com/" + "a" * 2048,
]


async def test_endpoints_refuse_bad_targets_at_create_and_patch(open_api: Factory) -> None:
    async with open_api() as c:
        for url in REFUSED_AT_CREATE:
            r = await c.post(ENDPOINTS, json={"url": url, "eventTypes": ["*"]},
                             headers=auth(PRODUCER))  # fmt: skip
            assert error_of(r, 400, "invalid_request").startswith("url: must"), url
        assert (await c.get(ENDPOINTS, headers=auth(PRODUCER))).json() == {"endpoints": []}

        good = "https://hooks.example.com/x"
        created = await c.post(ENDPOINTS, json={"url": good, "eventTypes": ["*"]},
                               headers=auth(PRODUCER))  # fmt: skip
        assert created.status_code == 201, created.text
        ep = created.json()["id"]
        for url in REFUSED_AT_CREATE:
            r = await c.patch(f"{ENDPOINTS}/{ep}", json={"url": url, "description": "changed"},
                              headers=auth(PRODUCER))  # fmt: skip
            assert error_of(r, 400, "invalid_request").startswith("url: must"), url
        after = (await c.get(f"{ENDPOINTS}/{ep}", headers=auth(PRODUCER))).json()
        assert after["url"] == good and "description" not in after


async def test_subscriptions_refuse_bad_targets(open_api: Factory) -> None:
    async with open_api() as c:
        for url in REFUSED_AT_CREATE:
            r = await c.post(SUBSCRIPTIONS, json={"callbackUrl": url}, headers=auth(WORKER))
            assert error_of(r, 400, "invalid_request").startswith("callbackUrl: must"), url
        assert (await c.get(SUBSCRIPTIONS, headers=auth(WORKER))).json() == {"subscriptions": []}
        r = await c.post(SUBSCRIPTIONS, json={"callbackUrl": "https://hooks.example.com/x"},
                         headers=auth(WORKER))  # fmt: skip
        assert r.status_code == 200, r.text


async def test_allowed_cidrs_open_private_targets_at_create(open_api: Factory) -> None:
    async with open_api(webhookAllowedCidrs=["127.0.0.0/8", "10.0.0.0/8"]) as c:
        for url in ("http://127.0.0.1:9/hook", "http://10.0.0.7/hook"):
            r = await c.post(ENDPOINTS, json={"url": url, "eventTypes": ["*"]},
                             headers=auth(PRODUCER))  # fmt: skip
            assert r.status_code == 201, r.text
            r = await c.post(SUBSCRIPTIONS, json={"callbackUrl": url}, headers=auth(WORKER))
            assert r.status_code == 200, r.text
        r = await c.post(ENDPOINTS, json={"url": "http://192.168.0.1/", "eventTypes": ["*"]},
                         headers=auth(PRODUCER))  # fmt: skip
        assert "private" in error_of(r, 400, "invalid_request")


async def test_require_https_applies_to_endpoints_subscriptions_and_task_webhooks(
    open_api: Factory,
) -> None:
    async with open_api(webhookRequireHttps=True) as c:
        r = await c.post(ENDPOINTS, json={"url": "http://hooks.example.com/", "eventTypes": ["*"]},
                         headers=auth(PRODUCER))  # fmt: skip
        assert "https" in error_of(r, 400, "invalid_request")
        r = await c.post(SUBSCRIPTIONS, json={"callbackUrl": "http://hooks.example.com/"},
                         headers=auth(WORKER))  # fmt: skip
        assert error_of(r, 400, "invalid_request").startswith("callbackUrl: must be an https")
        assert (await c.get(ENDPOINTS, headers=auth(PRODUCER))).json() == {"endpoints": []}
        assert (await c.get(SUBSCRIPTIONS, headers=auth(WORKER))).json() == {"subscriptions": []}
        body = {"url": "https://hooks.example.com/", "eventTypes": ["*"]}
        ok = await c.post(ENDPOINTS, json=body, headers=auth(PRODUCER))
        assert ok.status_code == 201, ok.text
        r = await c.patch(f"{ENDPOINTS}/{ok.json()['id']}", json={"url": "http://hooks.example.com/"},
                          headers=auth(PRODUCER))  # fmt: skip
        assert error_of(r, 400, "invalid_request").startswith("url: must be an https")
        # a task's webhook, alone and in a batch (a per-item error): nothing is saved
        plain = {"command": "RENDER", "payload": 1, "webhook": "http://hooks.example.com/"}
        r = await c.post(TASKS, json=plain, headers=auth(PRODUCER))
        assert error_of(r, 400, "invalid_request").startswith("webhook: must be an https URL")
        r = await c.post(f"{TASKS}/batch", json={"tasks": [plain]}, headers=auth(PRODUCER))
        assert r.status_code == 202, r.text
        assert r.json()["tasks"] == [], r.text
        [error] = r.json()["errors"]
        assert error["index"] == 0 and error["code"] == "invalid_request", error
        assert error["error"].startswith("webhook: must be an https URL"), error
        assert (await c.get(TASKS, headers=auth(PRODUCER))).json()["tasks"] == []
        secure = {**plain, "webhook": "https://hooks.example.com/"}
        r = await c.post(TASKS, json=secure, headers=auth(PRODUCER))
        assert r.status_code == 202, r.text
