"""The store on Redis, KVRocks or Redis Cluster (redis-py asyncio), and on the embedded
in-memory emulation: every change is one ``FCALL`` of a script in ``codeq/store/lua``.

:class:`RedisStore` is the one implementation of :class:`codeq.store.protocol.Backend`. It is
put together from one module per concept, each with its scripts:

- ``base.py``: the client, script calls (functions), Redis or KVRocks, the life cycle;
  ``coalescer.py``: concurrent script calls as one pipeline (standalone servers);
- ``tasks.py``: task transitions and reads (create, claim, ..., get, get_many);
- ``upkeep.py``: the DLQ, purge, the sweeper's step, event trimming;
- ``gauges.py``: queue stats and the ``/metrics`` gauges;
- ``tail.py``: the event tail's stream reads;
- ``deliveries.py``: consumer groups and the delivery schedule; ``endpoints.py``,
  ``subscriptions.py``, ``rate_limits.py``: the rest of what the gateway and deliverers keep.

redis-py errors are translated where they are raised (:mod:`codeq.store.errors`): nothing
above ``codeq/store`` sees a redis exception. Only :mod:`codeq.store.factory` (and tests)
name this class; everything else holds the protocols.
"""

from __future__ import annotations

from functools import cached_property

from codeq.store.deliveries import DeliveryStore
from codeq.store.endpoints import EndpointStore
from codeq.store.errors import StoreError
from codeq.store.gauges import StoreGauges
from codeq.store.hook_events import HookEventStore
from codeq.store.protocol import (
    ConsumerGroups,
    Deliveries,
    Endpoints,
    EventStreams,
    HookEvents,
    Meters,
    RateBuckets,
    Subscriptions,
    Tasks,
)
from codeq.store.rate_limits import RateLimiter
from codeq.store.subscriptions import SubscriptionStore
from codeq.store.tail import StreamTail
from codeq.store.tasks import TaskTransitions
from codeq.store.upkeep import TaskUpkeep

__all__ = ["RedisStore", "StoreError"]


class RedisStore(TaskTransitions, TaskUpkeep, StoreGauges, StreamTail):
    """A :class:`codeq.store.protocol.Backend` on one redis-py client: the task side, the
    gauges and the event tail are its own methods; the delivery side, endpoints,
    subscriptions and rate limits are parts built on it when first asked for."""

    @property
    def tasks(self) -> Tasks:
        return self

    @property
    def events(self) -> EventStreams:
        return self

    @property
    def meters(self) -> Meters:
        return self

    @cached_property
    def _deliveries(self) -> DeliveryStore:
        return DeliveryStore(self)

    @property
    def groups(self) -> ConsumerGroups:
        return self._deliveries

    @cached_property
    def hook_events(self) -> HookEvents:
        return HookEventStore(self)

    @property
    def deliveries(self) -> Deliveries:
        return self._deliveries

    @cached_property
    def endpoints(self) -> Endpoints:
        return EndpointStore(self)

    @cached_property
    def subscriptions(self) -> Subscriptions:
        return SubscriptionStore(self)

    @cached_property
    def rate_buckets(self) -> RateBuckets:
        return RateLimiter(self)
