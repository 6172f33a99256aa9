"""``python -m codeq.store``: the names of this release's function libraries, one a line (what
an operator keeps when deleting an old release's, docs/deploy.md).

``python -m codeq.store list-waiting-apart``: switch every partition of the configured store
(the settings a server reads: environment, ``CODEQ_CONFIG_PATH``) to listing its delayed tasks
under a range of their own (qstats ``!ixw``, lib.lua ``ixw``), once no process of a release
before that runs; prints each partition and where it stands: ``moving`` (the sweeper moves its
older entries) or ``done``."""

from __future__ import annotations

import asyncio
import os
import sys

from codeq.settings import Settings, SettingsError
from codeq.store.factory import open_store
from codeq.store.redis_store import RedisStore
from codeq.store.scripts import load_scripts


async def _list_waiting_apart(settings: Settings) -> list[str]:
    if settings.store_kind != "redis":  # `codeq serve` switches its private store at every
        # start, and a server the embedded one (always new) at its start
        raise SystemExit("no store address is configured (REDIS_URL, REDIS_ADDR, redisUrl)")
    store = open_store(settings)
    assert isinstance(store, RedisStore)
    try:
        done = await store.list_waiting_apart()
        assert done is not None
        return [f"{p} {'done' if d else 'moving'}" for p, d in enumerate(done)]
    finally:
        await store.close()


def main(argv: list[str]) -> None:
    if not argv:
        print("\n".join(sorted(script.function for script in load_scripts().values())))
    elif argv == ["list-waiting-apart"]:
        try:
            settings = Settings.load(environ=os.environ)
        except SettingsError as exc:
            raise SystemExit(str(exc)) from None
        print("\n".join(asyncio.run(_list_waiting_apart(settings))))
    else:
        raise SystemExit("usage: python -m codeq.store [list-waiting-apart]")


main(sys.argv[1:])
