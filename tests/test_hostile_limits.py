"""Body limits (issue 15, items 3 and 4): the depth check is exact, routes with different body
decoders answer a hostile body alike, ``maxJsonDepth`` is honoured, and a claim naming tens of
thousands of commands, or a megabyte of one-letter names in a list, is refused at once without
stalling the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from codeq.errors import InvalidRequest
from codeq.schemas import COMMAND_REGEX, ClaimBody
from gateway import json_depth
from gateway.app import create_app
from gateway.bodies import decode_body
from gateway.middleware import json_too_deep
from gateway.routes.endpoints import EndpointBody
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import make_store
from tests.test_api import ADMIN, PRODUCER, WORKER, auth, make_settings

T = "/v1/codeq/tasks"
MAX_BODY = 1 << 20
DEPTH = 8


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


def random_json(rng: random.Random, budget: int) -> Any:
    leaves = [1, 2.5, None, True, "", "[", "]]", "{", '\\"[', "\\", 'a"]}{[', "é[", "\\\\["]
    if budget == 0 or rng.random() < 0.25:
        return rng.choice(leaves)
    items = [random_json(rng, budget - 1) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        return items
    return {f"k{i}{rng.choice(leaves)}": v for i, v in enumerate(items)}


def test_the_depth_check_is_exact() -> None:
    rng = random.Random(15)
    for _ in range(3000):
        value = random_json(rng, rng.randint(0, 10))
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        depth = depth_of(value)
        for limit in range(1, 12):
            assert json_too_deep(raw, limit) == (depth > limit), (raw, limit, depth)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1_000_000,
        b"[" + b"[[[[]]]]," * 100_000 + b"1]",
        b'["' + b'\\"[' * 300_000 + b'"]',
        b'{"a":[' + (b"[" * 63 + b"]" * 63 + b",") * 8000 + b"1]}",
    ],
    ids=["open", "shallow-many", "escaped-strings", "just-too-deep"],
)
def test_the_depth_check_is_linear(raw: bytes) -> None:
    started = time.perf_counter()
    json_too_deep(raw, 64)
    # About 10 ms for a megabyte on a loaded CI core; decoding the same bytes costs more.
    assert time.perf_counter() - started < 0.25


@pytest.mark.parametrize("height", [10, 24, 63, 65])
async def test_a_long_walk_runs_beside_the_loop_and_answers_the_same(height: int) -> None:
    """A megabyte of brackets that the C passes cannot settle: the walk goes to the helper
    process, and its answer is the one the walk in this thread gives."""
    mountain = b"[" * height + b"]" * height
    raw = b"[" + b",".join([mountain] * (MAX_BODY // (2 * height + 1) - 1)) + b"]"
    assert len(raw) > json_depth.INLINE_STEPS
    assert await json_depth.too_deep(raw, 64) is json_too_deep(raw, 64) is (height + 1 > 64)


@pytest.fixture
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "hl" + uuid.uuid4().hex[:10]
    settings = make_settings(tmp_path, prefix, maxBodyBytes=MAX_BODY, maxJsonDepth=DEPTH)
    app = create_app(settings, store=make_store(request, "redis", prefix), close_store=True)
    async with serve_in_process(app) as c:
        yield c


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


async def test_max_json_depth_is_the_setting(client: ApiClient) -> None:
    # The body object is level 1: a payload of DEPTH - 1 levels is the deepest allowed.
    ok = {"command": "RENDER", "payload": nested(DEPTH - 1)}
    r = await client.post(T, json=ok, headers=auth(PRODUCER))
    assert r.status_code == 202, r.text
    in_batch = {"tasks": [{"command": "RENDER", "payload": nested(DEPTH - 3)}]}
    r = await client.post(f"{T}/batch", json=in_batch, headers=auth(PRODUCER))
    assert r.status_code == 202 and r.json()["errors"] == [], r.text
    too_deep = {"command": "RENDER", "payload": nested(DEPTH)}
    too_deep_batch = {"tasks": [{"command": "RENDER", "payload": nested(DEPTH - 2)}]}
    for path, body in ((T, too_deep), (f"{T}/batch", too_deep_batch)):
        r = await client.post(path, json=body, headers=auth(PRODUCER))
        assert r.status_code == 400, r.text
        assert r.json() == {
            "error": f"body: nested deeper than {DEPTH} levels (maxJsonDepth)",
            "code": "invalid_request",
        }


async def chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


FRAMING: list[tuple[str, dict[str, Any], int]] = [
    ("deep", {"content": b'{"x":' + b"[" * 500 + b"]" * 500 + b"}"}, 400),
    ("open-brackets", {"content": b"[" * 100_000}, 400),
    ("length-negative", {"content": b"{}", "headers": {"content-length": "-1"}}, 400),
    ("length-malformed", {"content": b"{}", "headers": {"content-length": "0x10"}}, 400),
    ("length-over", {"content": b"{}", "headers": {"content-length": str(MAX_BODY + 1)}}, 413),
    ("body-over", {"content": b'{"x":"' + b"y" * MAX_BODY + b'"}'}, 413),
    ("chunked-over", {"content": chunks(b" " * (MAX_BODY + 10))}, 413),
    ("text-plain", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
    ("bad-utf8", {"content": b'{"command":"\xff"}'}, 400),
    ("bad-utf8-in-an-ignored-field", {"content": b'{"ignored":"\xc3("}'}, 400),
]


@pytest.mark.parametrize(("kind", "request_kw", "status"), FRAMING, ids=[f[0] for f in FRAMING])
async def test_routes_answer_a_hostile_body_alike(
    client: ApiClient, kind: str, request_kw: dict[str, Any], status: int
) -> None:
    answers = []
    for token, path in (
        (PRODUCER, T),  # create: its handler decodes the body itself
        (PRODUCER, f"{T}/batch"),  # Litestar decodes it (a typed `data` parameter)
        (ADMIN, "/v1/codeq/admin/tasks/cleanup"),  # its own decoder
    ):
        kw = dict(request_kw)
        if kind == "chunked-over":
            kw["content"] = chunks(b" " * (MAX_BODY + 10))
        headers = {**auth(token), **kw.pop("headers", {})}
        r = await client.post(path, headers=headers, **kw)
        assert r.headers["content-type"].startswith("application/json")
        answers.append((r.status_code, r.json()))
    assert answers[0][0] == status, answers
    assert answers[0] == answers[1] == answers[2], answers
    stats = await client.get("/v1/codeq/admin/queues", headers=auth(ADMIN))
    assert stats.json() == {"queues": []}


async def test_a_claim_of_60000_commands_is_refused_at_once(client: ApiClient) -> None:
    body = {"commands": [f"CMD_{i}" for i in range(60_000)]}
    assert len(json.dumps(body)) < MAX_BODY

    async def health_latency() -> float:
        started = time.perf_counter()
        r = await client.get("/healthz")
        assert r.status_code == 200
        return time.perf_counter() - started

    started = time.perf_counter()
    claim, health = await asyncio.gather(
        client.post(f"{T}/claim", json=body, headers=auth(WORKER)), health_latency()
    )
    elapsed = time.perf_counter() - started
    assert claim.status_code == 400, claim.text
    assert claim.json()["code"] == "invalid_request" and "commands" in claim.json()["error"]
    # Before the cap this took 20-40 s and held /healthz meanwhile.
    assert elapsed < 2.0 and health < 2.0, (elapsed, health)


# -- lists of names: a megabyte of them is refused for its length, not matched item by item --

MIB = 1 << 20


def one_letter_names(prefix: bytes, suffix: bytes = b"}") -> bytes:
    """A 1 MiB body whose list (opened by ``prefix``) holds ~250,000 one-letter names."""
    n = (MIB - len(prefix) - len(suffix) - 1) // 4
    return prefix + b",".join([b'"a"'] * n) + b"]" + suffix


CLAIM_1MIB = one_letter_names(b'{"commands":[')
CHANNELS_1MIB = one_letter_names(b'{"url":"https://8.8.8.8/hook","eventTypes":["*"],"channels":[')


def fastest(f: Any, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        with contextlib.suppress(InvalidRequest):
            f()
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(
    ("raw", "body", "field", "limit"),
    [
        (CLAIM_1MIB, ClaimBody | None, "commands", 100),
        (CHANNELS_1MIB, EndpointBody, "channels", 10),
    ],
    ids=["claim-commands", "endpoint-channels"],
)
def test_a_megabyte_list_of_names_costs_no_more_than_parsing_it(
    raw: bytes, body: Any, field: str, limit: int
) -> None:
    """The names' pattern is checked after the list's length: decoding the body costs about
    what parsing the same bytes as plain JSON does (the pattern checked item by item first
    made it 7 to 13 times that: ~160 ms of event loop for one request)."""
    assert len(raw) <= MIB
    decoder = msgspec.json.Decoder(body)
    with pytest.raises(InvalidRequest) as refused:
        decode_body(raw, decoder)
    assert refused.value.message == f"{field}: Expected `array` of length <= {limit}"
    typed = fastest(lambda: decode_body(raw, decoder))
    plain = fastest(lambda: msgspec.json.decode(raw))
    assert typed < 3 * plain, (typed, plain)


async def test_a_megabyte_list_of_names_is_refused_over_the_api(client: ApiClient) -> None:
    """With maxBodyBytes 1 MiB both bodies reach the decoder: a 400 naming the list. (How long
    they hold the event loop is measured above, in process: a /healthz probe here would run
    in the same loop as the app and could only wait for the whole request.)"""
    headers = {"content-type": "application/json"}
    for token, path, raw, field in (
        (WORKER, f"{T}/claim", CLAIM_1MIB, "commands"),
        (PRODUCER, "/v1/codeq/webhooks/endpoints", CHANNELS_1MIB, "channels"),
    ):
        r = await client.post(path, content=raw, headers={**auth(token), **headers})
        assert r.status_code == 400, r.text
        assert r.json() == {
            "error": f"{field}: Expected `array` of length <= {100 if field == 'commands' else 10}",
            "code": "invalid_request",
        }
    listed = await client.get("/v1/codeq/webhooks/endpoints", headers=auth(PRODUCER))
    assert listed.json() == {"endpoints": []}


BAD_NAMES = ["a b", "", "RENDER\n", "é", "x" * 129, "../x", "a\x00"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_bad_name_in_a_list_gets_the_message_a_pattern_gives(name: str) -> None:
    """The pattern checked after decoding answers as msgspec does when the item type holds
    the pattern itself (what these lists did before): the same words, the field and the
    item named — except that ``RENDER\\n`` is refused in both lists now (a ``$`` in a channel's
    pattern had let a final newline through)."""
    item = Annotated[str, msgspec.Meta(pattern=COMMAND_REGEX)]
    for field, decoder, prefix in (
        ("commands", msgspec.json.Decoder(ClaimBody), {}),
        ("channels", msgspec.json.Decoder(EndpointBody), {"url": "x", "eventTypes": ["*"]}),
    ):
        raw = msgspec.json.encode({**prefix, field: ["ok", name]})
        with pytest.raises(InvalidRequest) as ours:
            decode_body(raw, decoder)
        strict = msgspec.json.Decoder(msgspec.defstruct("Strict", [(field, list[item])]))
        with pytest.raises(InvalidRequest) as theirs:
            decode_body(msgspec.json.encode({field: ["ok", name]}), strict)
        if len(name) in (0, 129):  # the item's length is checked while decoding
            assert ours.value.message.startswith(f"{field}[1]: Expected `str` of length")
        else:
            assert ours.value.message == theirs.value.message, (ours.value, theirs.value)
            assert ours.value.field == field
