"""Listing a tenant's tasks (issue 17): pages from the listing indexes the transition scripts
keep (``by_status``, ``by_command``: see ``codeq/store/lua/lib.lua``), merged over partitions,
newest first, behind an opaque cursor.

The plan of a page, by filter:

- ``idempotencyKey``: the key names at most one task (while the key is kept,
  ``idempotencyTtlSeconds``); one call to the key's partition.
- ``command`` with ``status`` ``PENDING``, ``IN_PROGRESS`` or ``DEAD``: the tenant's range of
  that status in ``by_status``, the command checked on the records (those statuses hold what is
  waiting or in hand, usually far fewer tasks than a command has had), looking at no more than
  ``scan_bound`` entries per partition and page;
- ``command`` otherwise: the queue's range of ``by_command``; a ``status`` or ``priority``
  filter is checked on the records, within the same bound.
- otherwise the tenant's ranges of ``by_status``, one per listing status asked for (all five
  without ``status``), merged; ``priority`` is checked on the records as above.

Creation times bound every range directly. A partition answers with where it stopped
(``reached``); the page keeps what is at or above the newest of those, so no partition's task is
ever skipped, and the cursor goes on from there. The cursor is base64url of a msgpack array
(version, scope, position) and a keyed BLAKE2b tag: the scope is a digest of the tenant and the
filters, so a cursor of another tenant or another filter is refused, and the tag refuses any
cursor this service did not write (400).

What every listing shares (the delivery search of issue 18 too) is here as well: the cursors
(:class:`Cursors`, one purpose each, so one listing's cursor is no other's), the merge of the
partitions' pages (:func:`newest_first`) and the refusal of a parameter a listing does not know
(:func:`refuse_unknown`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import msgspec

from codeq.domain import ListStatus, Task, TaskFilter, TaskPage
from codeq.errors import InvalidRequest
from codeq.ids import is_task_id
from codeq.store.keys import escape, queue_segment
from codeq.store.protocol import IndexPage, IndexQuery, Store

__all__ = [
    "MAX_LIST_LIMIT",
    "SCAN_BOUND",
    "Cursors",
    "TaskLister",
    "newest_first",
    "refuse_unknown",
]

MAX_LIST_LIMIT = 500
#: index entries one partition looks at per page when a filter has no index of its own
SCAN_BOUND = 2000

#: listing status -> the codes of ``by_status`` (lib.lua ``ix_code``: P ready, W delayed)
_CODES = {
    ListStatus.PENDING: "PW",
    ListStatus.IN_PROGRESS: "R",
    ListStatus.COMPLETED: "C",
    ListStatus.FAILED: "FD",
    ListStatus.DEAD: "D",
    ListStatus.CANCELLED: "X",
}
_ALL_CODES = "PWRCFDX"
#: statuses that hold what is waiting or in hand: with a command, listed from their own range
_FEW = frozenset({ListStatus.PENDING, ListStatus.IN_PROGRESS, ListStatus.DEAD})
_POSITION = re.compile(r"[0-9]{13}![0-9a-f-]{36}")
_TAG_BYTES = 16
_BAD_CURSOR = "cursor: not a cursor this service gave out for this tenant and these filters"


_T = TypeVar("_T")


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    version: int
    scope: bytes  # digest of the tenant and the filters
    at: str  # "<createdAt:13>!<id>" of the last item looked at


class Cursors:
    """The opaque cursors of one listing, bound to a tenant and its filters (any msgspec
    value: a Struct of them). ``purpose`` names the listing and keys its tags apart from every
    other listing's; ``position`` says whether a position is one this listing writes."""

    def __init__(
        self, cursor_key: bytes, *, purpose: bytes, position: Callable[[str], bool]
    ) -> None:
        self._key = hashlib.sha256(purpose + b"\0" + cursor_key).digest()
        self._valid = position

    def _scope(self, tenant: str, filters: object) -> bytes:
        text = msgspec.msgpack.encode((tenant, msgspec.to_builtins(filters)))
        return hashlib.blake2b(text, key=self._key, digest_size=12).digest()

    def _tag(self, body: bytes) -> bytes:
        return hmac.digest(self._key, body, "sha256")[:_TAG_BYTES]

    def encode(self, tenant: str, filters: object, at: str) -> str:
        body = msgspec.msgpack.encode(_Cursor(version=1, scope=self._scope(tenant, filters), at=at))
        return base64.urlsafe_b64encode(body + self._tag(body)).decode().rstrip("=")

    def decode(self, tenant: str, filters: object, cursor: str) -> str:
        """The position a cursor goes on after; InvalidRequest (field ``cursor``) for anything
        this service did not write for this listing, this tenant and these filters."""
        bad = InvalidRequest(_BAD_CURSOR, field="cursor", code="invalid_cursor")
        if not 1 <= len(cursor) <= 256:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except ValueError:
            raise bad from None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if len(raw) <= _TAG_BYTES or not hmac.compare_digest(tag, self._tag(body)):
            raise bad
        try:
            c = msgspec.msgpack.decode(body, type=_Cursor)
        except msgspec.DecodeError:
            raise bad from None
        if c.version != 1 or not hmac.compare_digest(c.scope, self._scope(tenant, filters)):
            raise bad
        if not self._valid(c.at):
            raise bad
        return c.at


def newest_first(
    pages: Iterable[tuple[Iterable[_T], str | None]], position: Callable[[_T], str], limit: int
) -> tuple[list[_T], str | None]:
    """The page of a listing from its partitions' pages, each (items, where it stopped or
    None when it ended): newest first, and the position the next page goes on after (None:
    nothing after this page). Every partition looked at everything at or above the newest place
    one stopped at, so only what is there is kept: no partition's item is ever skipped."""
    pages = list(pages)
    frontier = max((reached for _, reached in pages if reached is not None), default=None)
    found = sorted((x for items, _ in pages for x in items), key=position, reverse=True)
    if frontier is not None:
        found = [x for x in found if position(x) >= frontier]
    page = found[:limit]
    return page, position(page[-1]) if len(found) > limit else frontier


def refuse_unknown(given: Iterable[str], allowed: frozenset[str]) -> None:
    """400 naming the first query parameter that is not one of the listing's: a filter is
    never silently left out."""
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise InvalidRequest(
            f"{unknown[0][:64]}: not a filter of this listing (use "
            + ", ".join(sorted(allowed))
            + ")",
            field=unknown[0][:64],
        )


def _position(task: Task) -> str:
    return f"{task.created_at_ms:013d}!{task.id}"


def _task_position(at: str) -> bool:
    return _POSITION.fullmatch(at) is not None and is_task_id(at[14:])


class TaskLister:
    """Pages of a tenant's tasks over a :class:`~codeq.store.protocol.Store`.

    ``cursor_key`` keys the cursors' tags: a per-deployment secret makes them unforgeable;
    whatever the key, a cursor only ever positions a listing inside the caller's own tasks,
    because every index range a page reads starts with the caller's tenant."""

    def __init__(self, store: Store, *, cursor_key: bytes, scan_bound: int = SCAN_BOUND) -> None:
        self.store = store
        self.keys = store.keys
        self._cursors = Cursors(
            cursor_key, purpose=b"codeq task listing cursor", position=_task_position
        )
        self.scan_bound = scan_bound

    # -- cursors ------------------------------------------------------------------------

    def encode_cursor(self, tenant: str, flt: TaskFilter, at: str) -> str:
        return self._cursors.encode(tenant, flt, at)

    def decode_cursor(self, tenant: str, flt: TaskFilter, cursor: str) -> str:
        """The position a cursor goes on after; InvalidRequest (field ``cursor``) for anything
        this service did not write for this tenant and these filters."""
        return self._cursors.decode(tenant, flt, cursor)

    # -- pages --------------------------------------------------------------------------

    def _query(self, tenant: str, flt: TaskFilter, limit: int, after: str | None) -> IndexQuery:
        codes = _CODES[flt.status] if flt.status is not None else ""
        prefixes: tuple[str, ...]
        queue = ""
        if flt.idempotency_key is None and flt.command is not None and flt.status in _FEW:
            index, prefixes = "status", tuple(f"{escape(tenant)}!{c}" for c in codes)
            queue, codes = queue_segment(tenant, flt.command), ""
        elif flt.idempotency_key is not None or flt.command is not None:
            index = "idem" if flt.idempotency_key is not None else "command"
            prefixes = () if flt.command is None else (queue_segment(tenant, flt.command),)
        else:
            index, t = "status", escape(tenant)
            prefixes, codes = tuple(f"{t}!{c}" for c in (codes or _ALL_CODES)), ""
        return IndexQuery(
            tenant=tenant,
            index=index,
            prefixes=prefixes,
            size=limit,
            bound=self.scan_bound,
            created_from_ms=flt.created_from_ms,
            created_before_ms=flt.created_before_ms,
            after=after,
            codes=codes,
            queue=queue,
            priority=flt.priority,
        )

    async def page(
        self, tenant: str, flt: TaskFilter, *, limit: int, cursor: str | None
    ) -> TaskPage:
        """One page, newest first: one script call per partition (concurrently), one in all
        for an idempotency key."""
        after = None if cursor is None else self.decode_cursor(tenant, flt, cursor)
        query = self._query(tenant, flt, limit, after)
        pages: list[IndexPage]
        if flt.idempotency_key is not None:
            p = self.keys.idempotency_partition(tenant, flt.idempotency_key)
            pages = [await self.store.list_tasks(p, query, idempotency_key=flt.idempotency_key)]
        else:
            pages = list(
                await asyncio.gather(
                    *(self.store.list_tasks(p, query) for p in range(self.keys.partitions))
                )
            )
        tasks, nxt = newest_first(((pg.tasks, pg.reached) for pg in pages), _position, limit)
        return TaskPage(
            tasks=tuple(tasks),
            next_cursor=None if nxt is None else self.encode_cursor(tenant, flt, nxt),
        )
