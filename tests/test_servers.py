"""The test-support servers in tests/servers.py start, answer, stop and come back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
import redis.cluster

from tests.conftest import require_kvrocks
from tests.servers import (
    KvrocksServer,
    RedisCluster,
    RedisServer,
    ServerStartError,
    free_port,
    kvrocks_binary,
    wait_for,
)


def _refuses_connections(url: str) -> bool:
    with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
        try:
            client.ping()
        except redis.ConnectionError:
            return True
    return False


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_for_returns_and_times_out() -> None:
    calls: list[int] = []

    def third_time_lucky() -> bool:
        calls.append(1)
        return len(calls) >= 3

    wait_for(third_time_lucky, timeout=5, interval=0.001)
    assert len(calls) == 3
    with pytest.raises(TimeoutError, match="never"):
        wait_for(lambda: False, timeout=0.05, message="never")


def test_redis_server_stops_and_restarts_on_the_same_port() -> None:
    with RedisServer.start() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}"
        assert server.is_running()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
            client.set("k", "v")
        port = server.port

        server.stop()
        assert not server.is_running()
        assert _refuses_connections(server.url)

        server.restart()
        assert server.port == port
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
            assert client.get("k") is None  # no persistence by default
    assert not server.is_running()
    assert not server.dir.exists()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_persistent_redis_keeps_data_across_restart(how: str) -> None:
    with RedisServer.start(persistence=True) as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("survivor", "yes")
        if how == "kill":
            server.kill()  # appendfsync always: an acknowledged write is on disk already
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("survivor") == b"yes"


def test_redis_start_retries_when_the_picked_port_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests import servers

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or free_port())
        with RedisServer.start() as server:
            assert server.port != taken
            with redis.Redis.from_url(server.url) as client:
                assert client.ping()


def test_redis_start_failure_shows_the_log() -> None:
    with pytest.raises(ServerStartError, match="no-such-option"):
        RedisServer.start(extra_args=["--no-such-option", "1"])


def test_servers_die_with_the_test_process(tmp_path: Path) -> None:
    from tests import servers

    if not servers._setpriv_pdeathsig():
        pytest.skip("setpriv --pdeathsig is not available here")
    script = textwrap.dedent(
        """
        import os, signal, sys
        sys.path.insert(0, sys.argv[1])
        from tests.servers import RedisServer
        server = RedisServer.start(dir=sys.argv[2])  # a SIGKILLed process cleans up nothing
        print(server.port, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent.parent), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    url = f"redis://127.0.0.1:{int(child.stdout)}"
    wait_for(lambda: _refuses_connections(url), timeout=10, message="orphan server still up")


def test_redis_cluster_spreads_hash_tags_over_its_nodes() -> None:
    with RedisCluster.start() as cluster:
        assert len(cluster.nodes) == 3
        assert cluster.url == f"redis://{cluster.nodes[0][0]}:{cluster.nodes[0][1]}"
        for host, port in cluster.nodes:
            with redis.Redis(host, port) as node:
                info = node.cluster("INFO")
                assert info["cluster_state"] == "ok"
                assert int(info["cluster_slots_assigned"]) == 16384

        host, port = cluster.nodes[0]
        client = redis.cluster.RedisCluster(host, port)
        try:
            owners = set()
            for tag in range(4):
                key = f"{{{tag}}}:job"
                client.set(key, str(tag))
                assert client.get(key) == str(tag).encode()
                owners.add(client.get_node_from_key(key).name)  # type: ignore[no-untyped-call]
            assert len(owners) == 3
        finally:
            client.close()

        client = redis.cluster.RedisCluster(startup_nodes=cluster.startup_nodes)
        try:
            assert client.get("{0}:job") == b"0"
        finally:
            client.close()
    for _, port in cluster.nodes:
        assert _refuses_connections(f"redis://127.0.0.1:{port}")


def test_kvrocks_server_answers_ping() -> None:
    with KvrocksServer.start(binary=require_kvrocks()) as server:
        assert isinstance(server.strict_lua, bool)
        with redis.Redis.from_url(server.url, protocol=2) as client:
            assert client.ping()
            client.set("k", "v")
        server.restart()
        with redis.Redis.from_url(server.url, protocol=2) as client:
            assert client.get("k") == b"v"


def test_kvrocks_is_found_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import servers

    on_path = tmp_path / "bin" / "kvrocks"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.delenv("KVROCKS_BIN", raising=False)
    shared = tmp_path / "shared" / "kvrocks"
    monkeypatch.setattr(servers, "SHARED_KVROCKS", shared)
    assert kvrocks_binary() == str(on_path)  # PATH, last
    shared.parent.mkdir()
    shared.write_text("#!/bin/sh\n")
    shared.chmod(0o755)
    assert kvrocks_binary() == str(shared)  # ../shared/bin/kvrocks before PATH
    explicit = tmp_path / "mine"
    explicit.write_text("#!/bin/sh\n")
    explicit.chmod(0o755)
    monkeypatch.setenv("KVROCKS_BIN", str(explicit))
    assert kvrocks_binary() == str(explicit)  # KVROCKS_BIN first
    monkeypatch.setenv("KVROCKS_BIN", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="KVROCKS_BIN"):
        kvrocks_binary()


def test_a_missing_kvrocks_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import conftest

    monkeypatch.setattr(conftest, "kvrocks_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="kvrocks not found"):
        conftest.require_kvrocks()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        conftest.require_kvrocks()


# A stand-in for a kvrocks that predates lua-strict-key-accessing: it reads the config file and
# runs redis-server on the configured port and dir. "refuse" exits on the option, "warn" only
# prints a warning, as kvrocks does for keys it does not know.
_FAKE_KVROCKS = """\
#!{python}
import os, sys
conf = dict(
    line.split(" ", 1) for line in open(sys.argv[2]).read().splitlines() if " " in line
)
if "lua-strict-key-accessing" in conf:
    print("WARNING: 'lua-strict-key-accessing' is not a valid configuration key.", flush=True)
    if {refuse!r}:
        sys.exit(1)
os.execv({redis!r}, [{redis!r}, "--port", conf["port"], "--bind", conf["bind"],
    "--dir", conf["dir"], "--save", "", "--appendonly", "no"])
"""


@pytest.mark.parametrize("behaviour", ["refuse", "warn"])
def test_kvrocks_without_strict_lua_support_runs_without_it(tmp_path: Path, behaviour: str) -> None:
    from tests import servers

    fake = tmp_path / "kvrocks"
    fake.write_text(
        _FAKE_KVROCKS.format(
            python=sys.executable,
            refuse=behaviour == "refuse",
            redis=servers.redis_server_binary(),
        )
    )
    fake.chmod(0o755)
    with KvrocksServer.start(binary=str(fake), dir=tmp_path / "data") as server:
        assert server.strict_lua is False
        assert "workers 2" in server.config_path.read_text()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
    assert not server.is_running()
    assert os.path.isdir(tmp_path / "data")  # a dir given by the caller is left in place
