"""Replay jobs (issue 18 item 3): many deliveries attempted again as one asynchronous job,
worked through by the deliverers a page at a time.

A job has one *part* in every partition (``dlv_job_put.lua``), each with its own cursor over
that partition's listing index. A deliverer leases a runnable part (``dlv_job_lease.lua``: one
deliverer at a time; a dead one's lease runs out and another goes on), reads a page of the
matching deliveries with the delivery search (``dlv_search.lua``, the listing's own index and
positions) from the part's cursor, and hands the page's ids to ``dlv_job_step.lua``, which
replays the ones still in the job's statuses as ``dlv_replay.lua`` does (fresh schedule, same
id and body: the dispatcher sends them as any due delivery) and moves the cursor past the page
in the same call. A crash before a step repeats its read; a crash after it loses nothing; a
step whose lease ran out is refused, so nothing is replayed twice."""

from __future__ import annotations

import contextlib
import logging

import msgspec

from codeq.errors import StoreUnavailable
from codeq.listing import SCAN_BOUND
from codeq.store.protocol import Deliveries, DeliveryQuery
from deliverers.stopping import Stopping

__all__ = ["JOB_STATUSES", "ReplayJobs", "ReplayPart", "decode_part", "merge_status"]

log = logging.getLogger("codeq.deliverers.jobs")

#: a job's statuses; a part is never ``failed`` today (a step that fails is retried under a
#: new lease), the status is kept for the API's sake
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
#: deliveries replayed (or skipped) per step at most
STEP_SIZE = 500


class ReplayPart(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """One partition's part of a replay job, as the ``dlv_job_*.lua`` scripts keep it."""

    statuses: list[str]
    kind: str = "replay"  # replay | recover
    id: str = ""
    tenant: str = ""
    endpoint_id: str | None = None
    event_type: str | None = None
    created_from_ms: int | None = None
    created_before_ms: int | None = None
    status: str = "queued"
    cursor: str = ""
    replayed: int = 0
    skipped: int = 0
    owner: str | None = None
    lease_until: int | None = None
    created_at: int = 0
    updated_at: int = 0
    finished_at: int | None = None
    error: str | None = None

    def query(self, *, size: int, bound: int) -> DeliveryQuery:
        """The search of the part's next page, from its cursor."""
        return DeliveryQuery(
            tenant=self.tenant,
            size=size,
            bound=bound,
            statuses=tuple(self.statuses),
            endpoint_id=self.endpoint_id,
            event_type=self.event_type,
            created_from_ms=self.created_from_ms,
            created_before_ms=self.created_before_ms,
            after=self.cursor or None,
        )


_part = msgspec.json.Decoder(ReplayPart)


class _Id(msgspec.Struct):
    id: str


_ids = msgspec.json.Decoder(_Id)


def decode_part(raw: bytes) -> ReplayPart:
    return _part.decode(raw)


def merge_status(statuses: list[str]) -> str:
    """A job's status from its parts': cancelled or failed if one is, done when all are,
    queued while none has started, running in between."""
    for ended in ("cancelled", "failed"):
        if ended in statuses:
            return ended
    if all(s == "done" for s in statuses):
        return "done"
    if all(s == "queued" for s in statuses):
        return "queued"
    return "running"


def _page_ids(raws: tuple[bytes, ...]) -> list[str]:
    out = []
    for raw in raws:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            out.append(_ids.decode(raw).id)
    return out


class ReplayJobs:
    """The deliverer's loop over replay jobs: lease a runnable part in some partition, step it
    to its end (or until its lease is lost, or the job is cancelled), look again."""

    def __init__(
        self,
        deliveries: Deliveries,
        partitions: int,
        owner: str,
        *,
        stopping: Stopping,
        lease_ms: int = 30_000,
        step: int = STEP_SIZE,
        bound: int = SCAN_BOUND,
        interval: float = 0.5,
    ) -> None:
        self._deliveries = deliveries
        self._partitions = partitions
        self._owner = owner
        self._stopping = stopping
        self.lease_ms = lease_ms
        self.step = step
        self.bound = bound
        self._interval = interval

    async def run(self) -> None:
        while not self._stopping.is_set():
            worked = False
            for p in range(self._partitions):
                try:
                    worked = await self.run_part(p) or worked
                except StoreUnavailable:
                    break  # the lease runs out; this or another deliverer goes on later
                except Exception:
                    log.exception("replay job step failed", extra={"partition": p})
            if not worked:
                await self._stopping.pause(self._interval)

    async def run_part(self, partition: int, *, steps: int | None = None) -> bool:
        """Lease a runnable part in ``partition`` and step it (``steps`` at most: tests stop
        part-way as a dying deliverer would). False when none was runnable."""
        raw = await self._deliveries.lease_job(partition, self._owner, lease_ms=self.lease_ms)
        if raw is None:
            return False
        part = decode_part(raw)
        done = 0
        while not self._stopping.is_set() and (steps is None or done < steps):
            page = await self._deliveries.search(
                partition, part.query(size=self.step, bound=self.bound)
            )
            result = await self._deliveries.job_step(
                partition, part.id, self._owner, lease_ms=self.lease_ms, cursor=part.cursor,
                reached=page.reached, statuses=part.statuses, ids=_page_ids(page.records),
            )  # fmt: skip
            done += 1
            if result.outcome != "OK" or result.status != "running":
                break
            part.cursor = page.reached or ""
        return True
