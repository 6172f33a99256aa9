"""Pure pieces: key schema, escaping, backoff, ids."""

from __future__ import annotations

import itertools
import os
import random
import re

import pytest

from codeq.backoff import TABLE_SIZE, delay_seconds, delay_table_ms
from codeq.domain import BackoffPolicy
from codeq.ids import is_task_id, new_lease_id, new_task_id
from codeq.store.keys import KeySchema, escape, queue_segment

ALPHABET = ["a", "Z", "0", "_", ".", "-", "%", ":", "{", "}", "/", "!", '"', " ", "é", "\x00"]


def test_escape_is_injective_and_never_emits_separators() -> None:
    seen: dict[str, str] = {}
    for n in range(4):
        for chars in itertools.product(ALPHABET, repeat=n):
            text = "".join(chars)
            out = escape(text)
            assert not set(out) & set('{}:/!"'), (text, out)
            assert seen.setdefault(out, text) == text, f"{text!r} and {seen[out]!r} collide"


def test_queue_segments_are_case_insensitive_on_command_only() -> None:
    assert queue_segment("T", "Render") == queue_segment("T", "RENDER")
    assert queue_segment("T", "x") != queue_segment("t", "x")
    assert queue_segment("a/b", "c") != queue_segment("a", "b/c")
    # ! sorts below every byte escape() emits: a lex range of one queue never spans another
    assert all(ord("!") < ord(c) for c in "%-._/0aA")


def test_every_key_of_a_partition_shares_one_hash_tag() -> None:
    keys = KeySchema("codeq", partitions=8)
    for p in range(8):
        tags = {re.search(r"\{([^}]*)\}", k).group(1) for k in keys.partition(p).all}  # type: ignore[union-attr]
        tags.add(re.search(r"\{([^}]*)\}", keys.idempotency(p, "t:x", "k{1}")).group(1))  # type: ignore[union-attr]
        assert tags == {str(p)}
    assert keys.partition(0).tasks == "codeq:{0}:tasks"


def test_partition_of_is_stable_and_spreads() -> None:
    keys = KeySchema("codeq", partitions=4)
    ids = [new_task_id() for _ in range(4000)]
    counts = [0, 0, 0, 0]
    for task_id in ids:
        p = keys.partition_of(task_id)
        assert p == keys.partition_of(task_id)
        counts[p] += 1
    assert min(counts) > 800
    assert KeySchema("x", 1).partition_of(ids[0]) == 0


@pytest.mark.parametrize("prefix", ["", "a{b}", "a:b", "x" * 65])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="keyPrefix"):
        KeySchema(prefix)


def test_backoff_policies() -> None:
    rng = random.Random(1)
    assert delay_seconds(BackoffPolicy.FIXED, 7, base=5, cap=900) == 5
    assert delay_seconds(BackoffPolicy.LINEAR, 3, base=5, cap=900) == 15
    assert delay_seconds(BackoffPolicy.LINEAR, 1000, base=5, cap=900) == 900
    assert [delay_seconds(BackoffPolicy.EXPONENTIAL, n, base=5, cap=900) for n in (1, 2, 3, 4)] == [
        5,
        10,
        20,
        40,
    ]
    assert delay_seconds(BackoffPolicy.EXPONENTIAL, 10**9, base=5, cap=900) == 900  # no overflow
    for n in range(1, 30):
        full = delay_seconds(BackoffPolicy.EXP_FULL_JITTER, n, base=5, cap=900, rng=rng)
        d = min(5 * 2 ** (n - 1), 900)
        assert 0 <= full <= d
        equal = delay_seconds(BackoffPolicy.EXP_EQUAL_JITTER, n, base=5, cap=900, rng=rng)
        assert d / 2 <= equal <= d
    assert delay_seconds(BackoffPolicy.EXPONENTIAL, 0, base=5, cap=900) == 5  # n is at least 1


def test_backoff_tables_jitter_each_attempt() -> None:
    table = delay_table_ms(BackoffPolicy.EXP_FULL_JITTER, base=5, cap=900, rng=random.Random(3))
    assert len(table) == TABLE_SIZE and len(set(table)) > TABLE_SIZE // 2
    assert all(0 <= ms <= 900_000 for ms in table)
    fixed = delay_table_ms(BackoffPolicy.EXPONENTIAL, base=1, cap=4)
    assert fixed[:4] == [1000, 2000, 4000, 4000]


def test_task_ids_are_uuid7_and_time_ordered() -> None:
    a, b = new_task_id(1_700_000_000_000), new_task_id(1_700_000_000_001)
    assert is_task_id(a) and a[14] == "7" and a[19] in "89ab"
    assert a < b
    assert not is_task_id("../../etc") and not is_task_id(a.upper())
    assert len(new_lease_id()) == 32 and new_lease_id() != new_lease_id()


def test_ids_come_from_a_pool_a_forked_child_does_not_share() -> None:
    """Ids and lease ids read the OS's random bytes 4 KiB at a time; after a fork the child
    reads its own, never the rest of its parent's pool."""
    leases = {new_lease_id() for _ in range(2000)}  # several pools' worth
    tasks = {new_task_id() for _ in range(2000)}
    assert len(leases) == 2000 and len(tasks) == 2000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next lease id, then out
        os.write(write, new_lease_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32 and child != new_lease_id()
