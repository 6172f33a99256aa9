"""Prometheus metrics of one app (its own registry, so several apps can live in one process).

The series keep the original codeQ's names; issue E completes the set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.task_created = Counter(
            "codeq_task_created_total", "Tasks created", registry=self.registry
        )
        self.task_claimed = Counter(
            "codeq_task_claimed_total", "Tasks claimed", registry=self.registry
        )
        self.task_completed = Counter(
            "codeq_task_completed_total",
            "Tasks finished by a worker's result",
            ["status"],
            registry=self.registry,
        )

        self.long_polls_waiting = Gauge(
            "codeq_long_polls_waiting",
            "Claim requests of this process waiting in a long poll",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
