"""The python examples of docs/webhooks.md's endpoint sections run as written against a real
``codeq serve`` and a real receiver, printing what their comments say; and the SDK's endpoint
methods, sync and async, do what the routes do."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from codeq.client import AsyncCodeQClient, CodeQClient
from tests.receivers import receiver
from tests.served import TOKEN, serve

WEBHOOKS_MD = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"
SECTIONS = (
    "## Testing an endpoint",
    "## Custom headers and rate limits",
    "## Secrets and rotation",
    "## Finding deliveries",  # before ed25519: its test send is the last
    "## Endpoint statistics",
    "## Replaying and recovering",
    "## Ed25519 signatures",
    "## Operational webhooks",
)


def test_the_endpoint_docs_examples_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = WEBHOOKS_MD.read_text()
    with serve({}) as s, receiver() as r:
        monkeypatch.setenv("CODEQ_BASE_URL", s.base)
        monkeypatch.setenv("CODEQ_TOKEN", TOKEN)
        monkeypatch.setenv("RECEIVER_URL", r.url)
        scope: dict[str, Any] = {"__name__": "webhooks_docs"}
        ran = 0
        for title in SECTIONS:
            section = text.split(title + "\n", 1)[1].split("\n## ", 1)[0]
            for code in re.findall(r"^```python\n(.*?)^```$", section, re.S | re.M):
                exec(compile(code, "docs/webhooks.md", "exec"), scope)  # noqa: S102
                want = re.findall(r"print\(.*\)  # (.*)$", code, re.M)
                assert capsys.readouterr().out.strip().splitlines() == want
                ran += 1
        assert ran >= 5
        last = r.received[-1]  # the ed25519 endpoint's test message
        assert scope["verify_v1a"](scope["public_key"], last.headers, last.body)
        assert not scope["verify_v1a"](scope["public_key"], last.headers, last.body + b" ")


def test_the_sdk_endpoint_methods_sync_and_async() -> None:
    with serve({}) as s, receiver() as r:

        async def both() -> None:
            async with AsyncCodeQClient(s.base, token=TOKEN) as cq:
                ep = await cq.create_endpoint(r.url, ["*"])
                assert (await cq.test_endpoint(ep["id"]))["status"] == "succeeded"
                assert (await cq.endpoint_secret(ep["id"]))["secret"] == ep["secret"]
                rotated = await cq.rotate_endpoint_secret(ep["id"])
                assert rotated["secret"] != ep["secret"]
                assert (await cq.get_endpoint(ep["id"]))["id"] == ep["id"]
                assert (await cq.update_endpoint(ep["id"], description="x"))["description"] == "x"
                assert len((await cq.endpoint_deliveries(ep["id"]))["deliveries"]) == 1
                assert ep["id"] in [e["id"] for e in (await cq.list_endpoints())["endpoints"]]
                assert await cq.delete_endpoint(ep["id"]) is None
                types = [e.type for e in (await cq.event_types()).event_types]
                assert "webhook.test" in types and "task.cancelled" in types

        asyncio.run(both())
        with CodeQClient(s.base, token=TOKEN) as cq:
            ep = cq.create_endpoint(r.url, ["*"])
            mine = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
            assert cq.rotate_endpoint_secret(ep["id"], secret=mine)["secret"] == mine
            assert cq.endpoint_secret(ep["id"])["secret"] == mine
            assert cq.delete_endpoint(ep["id"]) is None
            assert cq.event_types().event_types[0].type == "task.created"
