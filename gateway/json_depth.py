"""How deep a request body's arrays and objects nest (``maxJsonDepth``), without stalling the
event loop.

JSON decoders recurse per level, so a body nested past the limit is refused before any decoder
sees it. Most bodies are settled by a few passes over the bytes done in C (counting brackets,
dropping strings). What is left is a sequence of +1/-1 steps whose running sum must stay within
the limit; walking it costs Python work per bracket (~40 ms for a megabyte of brackets shaped
to defeat the shortcuts), so a long walk runs in a process of its own (:func:`too_deep`) and
the loop goes on serving everyone else meanwhile (bench/hostile_bodies.py).

This module imports nothing heavy: the helper process imports it alone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from itertools import accumulate

__all__ = ["json_too_deep", "too_deep"]

_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes
_NOT_STEPS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
#: steps walked in the event loop; a longer walk goes to the helper process
INLINE_STEPS = 32 * 1024

_pool: ProcessPoolExecutor | None = None


def _steps(raw: bytes, limit: int) -> bool | bytes:
    """The answer when the C passes settle it, else the +1/-1 steps still to walk."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:  # escapes only occur in strings; drop them so every '"' delimits one
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(None, _NOT_STRUCTURE)  # quotes and brackets
    if b'"' in structure:
        bare = structure.replace(b'""', b"")  # strings without brackets inside: the usual
        if b'"' in bare:  # some string holds brackets: keep only what lies outside strings
            bare = b"".join(structure.split(b'"')[::2])
        structure = bare
    steps = structure.translate(_STEPS, _NOT_STEPS)
    if steps.count(1) <= limit:
        return False
    if b"\x01" * (limit + 1) in steps:
        return True
    return steps


def walk(steps: bytes, limit: int) -> bool:
    """Does the running sum of these +1/-1 steps go past ``limit``? (Run in the helper
    process for long step sequences.)"""
    return max(accumulate(memoryview(steps).cast("b")), default=0) > limit


def json_too_deep(raw: bytes, limit: int) -> bool:
    """Are arrays and objects of this JSON text nested more than ``limit`` deep (the outermost
    counting 1)? Exact for valid JSON; for anything else the answer does not matter (the
    decoder refuses it). Linear; all in this thread (see :func:`too_deep` for the loop)."""
    verdict = _steps(raw, limit)
    return verdict if isinstance(verdict, bool) else walk(verdict, limit)


async def too_deep(raw: bytes, limit: int) -> bool:
    """:func:`json_too_deep` for the event loop: a walk longer than :data:`INLINE_STEPS` runs in
    the helper process (one, started at the first such body), so a megabyte of brackets holds
    the loop for the C passes only (a few ms)."""
    verdict = _steps(raw, limit)
    if isinstance(verdict, bool):
        return verdict
    if len(verdict) <= INLINE_STEPS:
        return walk(verdict, limit)
    global _pool
    if _pool is None:
        # spawn: a fresh interpreter that imports this module only (no fork of a running
        # event loop and its sockets)
        _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return await asyncio.get_running_loop().run_in_executor(_pool, walk, verdict, limit)
