"""Following a partition's event stream without a consumer group (what wakes long polls):
where the stream ends, and the entries after a point. No script: plain ``XREVRANGE`` and
``XREAD`` (``BLOCK`` on Redis, polled on KVRocks, see :func:`codeq.store.streams.poll`).
"""

from __future__ import annotations

from codeq.store.base import ScriptStore
from codeq.store.streams import TAIL_POLL_CAP_S, poll
from codeq.store.streams import text as _s

__all__ = ["StreamTail"]


class StreamTail(ScriptStore):
    """The event tail's reads of a store (:class:`codeq.store.protocol.EventStreams`)."""

    async def stream_end(self, key: str) -> str:
        """The id of the newest entry of a stream ("0-0" when empty): where a tail starts."""
        last = await self._command("xrevrange", key, count=1)
        return _s(last[0][0]) if last else "0-0"

    async def read_stream(
        self, key: str, after: str, *, block_ms: int, count: int
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries after ``after`` (``XREAD BLOCK``; polled on KVRocks); an empty list when
        the block times out. KVRocks answers ``[[key, []]]`` where Redis answers nil: both
        mean nothing new."""
        if await self.on_kvrocks():
            reply = await poll(
                lambda: self._command("xread", {key: after}, count=count),
                block_ms,
                TAIL_POLL_CAP_S,
            )
        else:
            reply = await self._command("xread", {key: after}, count=count, block=block_ms)
        out: list[tuple[str, dict[str, str]]] = []
        if not reply:
            return out
        streams = reply.items() if isinstance(reply, dict) else reply
        for _, entries in streams:
            if entries and isinstance(entries[0], list) and not isinstance(entries[0][0], bytes):
                entries = entries[0]  # RESP3 dict form nests one level deeper
            for entry_id, fields in entries or ():
                out.append((_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
        return out
