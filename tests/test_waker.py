"""Long-poll wake-ups (gateway.waker): a ``task.ready`` wakes at most ``depth`` waiters of its
(tenant, command), the longest waiting first; a task created through this process wakes one
at once, and its event, when it comes back through the tail, then wakes one fewer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from codeq.domain import NewTask
from gateway import waker as waker_module
from gateway.waker import Waker
from tests.conftest import eventually
from tests.test_api import ApiClient, claim, create
from tests.test_api import client as client  # the API fixture, on every store


def ready(task_id: str, depth: int = 1, command: str = "render") -> dict[str, str]:
    return {
        "type": "task.ready",
        "id": task_id,
        "tenant": "acme",
        "command": command,
        "depth": str(depth),
    }


async def test_an_event_wakes_up_to_depth_waiters_the_longest_waiting_first() -> None:
    waker = Waker()
    first, second, third = (waker.register("acme", ["RENDER"]) for _ in range(3))
    other = waker.register("acme", ["mail"])
    waker.on_event(ready("t1", depth=2))
    assert [w.event.is_set() for w in (first, second, third, other)] == [True, True, False, False]


async def test_a_create_entry_wakes_as_its_task_ready_only_when_it_carries_depth() -> None:
    """A create ready at once writes one entry: its task.created with depth (created in
    another process, so nothing here woke for it). A delayed create's task.created has no
    depth: that task is not claimable yet."""
    waker = Waker()
    first, second = waker.register("acme", ["render"]), waker.register("acme", ["render"])
    delayed = {**ready("t1"), "type": "task.created", "priority": "5", "runAt": "9"}
    del delayed["depth"]
    waker.on_event(delayed)
    assert (first.event.is_set(), second.event.is_set()) == (False, False)
    waker.on_event({**ready("t2", depth=2), "type": "task.created", "wasEmpty": "1"})
    assert (first.event.is_set(), second.event.is_set()) == (True, True)


async def test_a_task_created_here_wakes_one_waiter_and_its_event_one_fewer() -> None:
    waker = Waker()
    first, second = waker.register("acme", ["render"]), waker.register("acme", ["render"])
    waker.on_created("acme", "RENDER", "t1")
    assert (first.event.is_set(), second.event.is_set()) == (True, False)
    waker.on_event(ready("t1", depth=1))  # the same task's event: woken for already
    assert not second.event.is_set()
    waker.on_event(ready("t2", depth=1))  # another task's: as before
    assert second.event.is_set()


async def test_an_event_that_comes_before_its_creations_answer_is_not_doubled() -> None:
    waker = Waker()  # Redis' tail blocks: the event can beat the create's own answer
    first, second = waker.register("acme", ["render"]), waker.register("acme", ["render"])
    waker.on_event(ready("t1", depth=1))
    waker.on_created("acme", "render", "t1")
    assert (first.event.is_set(), second.event.is_set()) == (True, False)
    waker.on_created("acme", "render", "t2")  # another task: as before
    assert second.event.is_set()


async def test_a_half_that_never_comes_does_not_take_a_later_wake_up() -> None:
    now = [100.0]
    waker = Waker(clock=lambda: now[0])
    first = waker.register("acme", ["render"])
    waker.on_created("acme", "render", "t1")  # its event never comes (the tail was idle)
    assert first.event.is_set()
    waker.unregister(first)
    now[0] += waker_module.LOCAL_WAKE_WINDOW_S + 1
    later = waker.register("acme", ["render"])
    waker.on_event(ready("t1", depth=1))  # the same task ready again (abandoned, retried)
    assert later.event.is_set()


async def test_an_event_first_with_nobody_to_wake_means_its_create_wakes_nobody() -> None:
    waker = Waker()
    other = waker.register("acme", ["mail"])  # a poll waits here, not for this command
    waker.on_event(ready("t1"))
    late = waker.register("acme", ["render"])  # came after the event: its first claim finds t1
    waker.on_created("acme", "render", "t1")
    assert not late.event.is_set() and not other.event.is_set()
    waker.on_created("acme", "render", "t2")  # another task: as before
    assert late.event.is_set()


async def test_a_poll_that_took_a_task_hands_its_wake_up_on() -> None:
    waker = Waker()
    first, second = waker.register("acme", ["render"]), waker.register("acme", ["render"])
    waker.on_event(ready("t1"))  # wakes the first, whose claim was already under way...
    assert (first.event.is_set(), second.event.is_set()) == (True, False)
    waker.pass_on(first)  # ...and brought another task: the wake-up goes to the next
    waker.unregister(first)
    assert second.event.is_set()


async def test_a_task_created_with_nobody_waiting_here_leaves_its_event_whole() -> None:
    waker = Waker()
    waker.on_created("acme", "render", "t1")  # nobody waits: nothing woken, nothing kept
    late = waker.register("acme", ["render"])
    waker.on_event(ready("t1"))
    assert late.event.is_set()


async def test_the_tasks_woken_for_at_creation_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waker_module, "LOCAL_WAKES_KEPT", 2)
    waker = Waker()
    for i in range(3):
        waiter = waker.register("acme", ["render"])
        waker.on_created("acme", "render", f"t{i}")
        assert waiter.event.is_set()
        waker.unregister(waiter)
    late = waker.register("acme", ["render"])
    waker.on_event(ready("t0"))  # forgotten (the oldest): its event wakes as any other
    assert late.event.is_set()
    late.event.clear()
    waker.on_event(ready("t2"))  # still remembered: woken for already
    assert not late.event.is_set()
    # the event side likewise: t3's event is forgotten after two more, so its create wakes
    for i in (3, 4, 5):
        waker.on_event(ready(f"t{i}", command="mail"))  # nobody to wake, but a poll waits
    mail = waker.register("acme", ["mail"])
    waker.on_created("acme", "mail", "t3")
    assert mail.event.is_set()
    mail.event.clear()
    waker.on_created("acme", "mail", "t5")  # still remembered: its event came first
    assert not mail.event.is_set()


async def _a_parked_poll(client: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A 30 s long poll, once it is registered and its first claim has found nothing; the
    fallback re-check an hour away, so only a wake-up can answer it within a test's wait."""
    monkeypatch.setattr("gateway.routes.tasks.FALLBACK_RECHECK_SECONDS", 3600.0)
    engine = client.gw.engine
    claims_done: list[object] = []
    original = engine.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        out = await original(*args, **kwargs)
        claims_done.append(out)
        return out

    monkeypatch.setattr(engine, "claim", counted)

    async def parked() -> bool:
        return client.gw.waker.waiting() == 1 and claims_done == [None]

    polling = asyncio.create_task(claim(client, waitSeconds=30))
    await eventually(parked)
    return polling


async def test_a_create_wakes_a_poll_of_this_process_without_its_event(
    client: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no event tail: only the create itself can answer the poll within the test's wait
    assert client.gw.tail is not None
    await client.gw.tail.stop()
    polling = await _a_parked_poll(client, monkeypatch)
    created = await create(client)
    r = await asyncio.wait_for(polling, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == created["id"]


async def test_a_task_created_elsewhere_wakes_a_poll_through_its_one_event(
    client: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create in another process (here: the engine, past this gateway's routes) reaches a
    poll only through its stream entry, the task.created that is its task.ready too."""
    polling = await _a_parked_poll(client, monkeypatch)
    created = await client.gw.engine.create("acme", NewTask(command="RENDER", payload="{}"))
    r = await asyncio.wait_for(polling, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == created.task.id
