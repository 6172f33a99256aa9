"""Stream entries as the server sends them, reading their fields without decoding the rest,
and waiting for entries on a server where blocking reads are unsafe (:func:`poll`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "GROUP_POLL_CAP_S",
    "TAIL_POLL_CAP_S",
    "StreamEntry",
    "entries",
    "entry_list",
    "event_field",
    "event_fields",
    "event_kind",
    "has_entries",
    "poll",
    "raw_reply",
    "text",
]


def text(value: Any) -> str:
    """A reply value as text (bytes are UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def raw_reply(response: Any, **options: Any) -> Any:
    """A response callback that leaves the reply as the server sent it."""
    return response


StreamEntry = tuple[str, list[Any]]
"""A stream entry as the server sent it: (entry id, [name, value, name, value, ...]); the
values stay bytes until something needs them (most entries a consumer group reads are of no use
to it, and decoding every field of every entry was a tenth of a deliverer's time)."""


def entry_list(entries: Any) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for item in entries or ():
        if item is None:
            continue
        entry_id, fields = item[0], item[1]
        if isinstance(fields, dict):  # a client that turned the pairs into a map
            fields = [x for pair in fields.items() for x in pair]
        out.append((text(entry_id), fields or []))
    return out


def entries(reply: Any) -> list[StreamEntry]:
    """XREAD/XREADGROUP replies (RESP2 list or RESP3 map, KVRocks' empty forms) → entries."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    out: list[StreamEntry] = []
    for _, items in streams:
        out.extend(entry_list(items))
    return out


def event_kind(fields: list[Any]) -> str:
    """The ``type`` of an event entry's fields (the scripts write it first)."""
    if fields and fields[0] in (b"type", "type"):
        return text(fields[1])
    return event_fields(fields).get("type", "")


def event_field(fields: list[Any], name: str) -> str:
    """One field of an entry ("" when absent), without decoding the others."""
    key = name.encode()
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == key or fields[i] == name:
            return text(fields[i + 1])
    return ""


def event_fields(fields: list[Any]) -> dict[str, str]:
    """An entry's fields as text."""
    it = iter(fields)
    try:
        return {k.decode(): v.decode() for k, v in zip(it, it, strict=False)}
    except AttributeError:  # already text (a decoding client), or mixed
        it = iter(fields)
        return {text(k): text(v) for k, v in zip(it, it, strict=False)}


#: pauses between non-blocking reads on KVRocks: from 1 ms, doubling, up to the read's cap
FIRST_POLL_S = 0.001
#: the cap for the event tail (a long poll's wake-up waits for it) and for consumer groups
TAIL_POLL_CAP_S = 0.004
GROUP_POLL_CAP_S = 0.025


async def poll(read: Callable[[], Awaitable[Any]], block_ms: int, cap_s: float) -> Any:
    """``read()`` (a non-blocking stream read) until it answers with entries or ``block_ms``
    has passed: what ``BLOCK block_ms`` does, for a server where blocking reads are unsafe."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + block_ms / 1000
    pause = FIRST_POLL_S
    while True:
        reply = await read()
        if has_entries(reply):
            return reply
        remaining = deadline - loop.time()
        if remaining <= 0:
            return reply
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, cap_s)


def has_entries(reply: Any) -> bool:
    """A stream read's reply holds an entry: nil, ``[[key, []]]`` (KVRocks) and an empty
    RESP3 map are all "nothing new"."""
    if not reply:
        return False
    streams = reply.values() if isinstance(reply, dict) else (s[1] for s in reply)
    return any(bool(entries) for entries in streams)
