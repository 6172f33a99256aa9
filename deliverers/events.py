"""The stream entries a deliverer uses, decoded one at a time into a typed :class:`Event`, and
what a consumer group's handler makes of a batch (:class:`Handled`).

An entry that cannot be decoded (a missing or empty field, a number out of range, bytes that
are not UTF-8: written by an older version, by hand, by a bug) raises :class:`BadEvent` with a
reason; the deliverer quarantines that one entry (a dead-letter record, acknowledged) and goes
on with the rest of its batch. Only the entries a consumer group has a use for are decoded.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from codeq.domain import EventType, makes_ready
from codeq.store.streams import event_fields
from deliverers.records import Delivery

__all__ = [
    "BadEvent",
    "Event",
    "Handled",
    "decode_event",
    "event_type",
    "raw_field",
    "text_or_none",
]

# Milliseconds and counts: integers a double holds exactly (what the scripts can write).
_Int = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
_Text = Annotated[str, msgspec.Meta(min_length=1)]


class BadEvent(ValueError):
    """A stream entry that cannot be used; ``str()`` is the reason (no field values)."""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of an event entry the deliverers read (the scripts' ``emit``)."""

    type: _Text
    id: _Text
    tenant: _Text
    command: str = ""
    at: _Int = 0  # ms
    webhook: str | None = None  # terminal events of a task that has one
    depth: _Int | None = None  # task.ready, and a create's task.created that is one too

    def halves(self, entry_id: str) -> list[tuple[str, Event]]:
        """The events of the entry, in order, each with the id its deliveries take theirs
        from: the entry's own, and for a ``task.created`` that is its task's ``task.ready``
        too, that ``task.ready`` as a second event (``<entry id>/task.ready``: stream ids
        hold no ``/``, so no other entry or event has it)."""
        if self.type == EventType.READY or not makes_ready(self.type, self.depth is not None):
            return [(entry_id, self)]
        ready = msgspec.structs.replace(self, type=EventType.READY.value)
        return [(entry_id, self), (f"{entry_id}/{EventType.READY.value}", ready)]


def event_type(fields: list[Any]) -> str:
    """The ``type`` of an entry, without decoding the rest; BadEvent when it has none that
    is text."""
    try:
        if fields and fields[0] in (b"type", "type"):
            value = fields[1]
            kind = value.decode() if isinstance(value, bytes) else str(value)
        else:
            kind = event_fields(fields).get("type", "")
    except UnicodeDecodeError:
        raise BadEvent("a field is not UTF-8 text") from None
    if not kind:
        raise BadEvent("no type")
    return kind


def decode_event(fields: list[Any]) -> Event:
    """Every field the deliverers read, checked; BadEvent with the reason otherwise."""
    try:
        return msgspec.convert(event_fields(fields), Event, strict=False)
    except UnicodeDecodeError:
        raise BadEvent("a field is not UTF-8 text") from None
    except msgspec.ValidationError as exc:
        # msgspec names the field and the expectation ("Expected `int` <= ... - at `$.at`"),
        # never the value
        raise BadEvent(str(exc)) from None


def raw_field(fields: list[Any], name: bytes) -> bytes | str | None:
    """One field of an entry as the server sent it (None when absent), decoding nothing."""
    text_name = name.decode()
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name or fields[i] == text_name:
            value: bytes | str = fields[i + 1]
            return value
    return None


def text_or_none(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value


class Handled:
    """What a handler made of a batch: deliveries, and the entries it had to quarantine."""

    __slots__ = ("deliveries", "quarantined")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.quarantined: list[tuple[str, str]] = []  # (entry id, reason)

    def decode(self, entry_id: str, fields: list[Any]) -> Event | None:
        """The entry's event, or None after quarantining it."""
        try:
            return decode_event(fields)
        except BadEvent as exc:
            self.quarantined.append((entry_id, str(exc)))
            return None

    def kind(self, entry_id: str, fields: list[Any]) -> str | None:
        try:
            return event_type(fields)
        except BadEvent as exc:
            self.quarantined.append((entry_id, str(exc)))
            return None
