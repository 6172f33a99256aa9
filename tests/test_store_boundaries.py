"""Consumers hold the store's protocols, never its classes: outside ``codeq/store`` only the
factory (``open_store``) knows how a store is made. Tests and benchmarks may name the classes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: where consumers live (codeq/store itself is the implementation)
CONSUMERS = ("codeq", "gateway", "deliverers")
#: the modules that implement the protocols: nothing outside codeq/store imports them
IMPLEMENTATIONS = frozenset(
    f"codeq.store.{name}"
    for name in [
        "base",
        "coalescer",
        "connection",
        "deliveries",
        "endpoints",
        "gauges",
        "hook_events",
        "rate_limits",
        "redis_store",
        "subscriptions",
        "tail",
        "tasks",
        "upkeep",
    ]
)
#: the classes they define, however they are reached (``from codeq.store import RedisStore``)
CLASSES = frozenset(
    [
        "RedisStore",
        "ScriptStore",
        "DeliveryStore",
        "EndpointStore",
        "HookEventStore",
        "SubscriptionStore",
        "RateLimiter",
        "TaskTransitions",
        "TaskUpkeep",
        "StoreGauges",
        "StreamTail",
    ]
)


def _consumer_files() -> list[Path]:
    out = []
    for top in CONSUMERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if (ROOT / "codeq" / "store") not in path.parents:
                out.append(path)
    return out


def concrete_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for each import of an implementation module or class in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name in IMPLEMENTATIONS]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module in IMPLEMENTATIONS:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif node.module.startswith("codeq.store"):
                names = [
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if a.name in CLASSES or f"{node.module}.{a.name}" in IMPLEMENTATIONS
                ]
            else:
                names = []
        else:
            continue
        rel = path.relative_to(root)
        found += [f"{rel}:{node.lineno}: {name}" for name in names]
    return found


def test_only_the_factory_knows_the_store_classes() -> None:
    files = _consumer_files()
    assert len(files) > 30  # the walk sees the packages
    found = [hit for path in files for hit in concrete_imports(path)]
    assert not found, "import a protocol of codeq.store.protocol instead:\n" + "\n".join(found)


def test_the_check_sees_each_way_of_importing_a_class(tmp_path: Path) -> None:
    """The walk catches every form (top-level, in a function, from the package)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import codeq.store.redis_store\n"
        "from codeq.store import RedisStore, open_store\n"
        "from codeq.store.protocol import Backend\n"
        "def later():\n"
        "    from codeq.store.deliveries import DeliveryStore\n"
        "    from codeq.store import endpoints\n"
    )
    found = concrete_imports(probe, root=tmp_path)
    assert [hit.split(": ", 1)[1] for hit in found] == [
        "codeq.store.redis_store",
        "codeq.store.RedisStore",
        "codeq.store.deliveries.DeliveryStore",
        "codeq.store.endpoints",
    ]
