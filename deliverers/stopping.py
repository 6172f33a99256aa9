"""The stop signal a deliverer's loops share: each looks at it between reads and batches, and
every pause ends early when it is set."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Stopping"]


class Stopping:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until the stop, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=seconds)
