"""`stackvault server` on a real PostgreSQL catalog reloads its config on SIGHUP without leaving the
previous catalog's connections open: after many reloads it holds as many as after one."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from e2e.helpers import Stackvault

from .pgserver import SUPERUSER, PostgresServer

_names = itertools.count(1)


def _connections(postgres: PostgresServer, database: str) -> int:
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=SUPERUSER, dbname="postgres") as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()
        assert row is not None
        return int(row[0])


def _settled(postgres: PostgresServer, database: str) -> int:
    """The server's connections once a few polls have run on the current config."""
    time.sleep(3)
    return _connections(postgres, database)


@pytest.mark.slow
def test_sighup_keeps_the_catalogs_connections(postgres: PostgresServer, tmp_path: Path) -> None:
    database = f"reload{next(_names)}_{os.getpid()}"
    url = postgres.create_database(database)
    sv = Stackvault(tmp_path / "sv")
    sv.run("init", "--block-size", "64KiB", catalog=url)
    config = tmp_path / "sv.toml"
    config.write_text("[policy.proxy-state]\nenabled = false\n")
    server = subprocess.Popen(sv.argv(["server"], json_out=False, globals_=["--config", str(config)], catalog=url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sv.env(),
                              start_new_session=True)
    try:
        assert server.stderr is not None
        started: list[str] = []
        while not started or "serving policies" not in started[-1]:  # its SIGHUP handler is installed now
            started.append(server.stderr.readline())
            assert started[-1], started
        server.send_signal(signal.SIGHUP)
        after_one = _settled(postgres, database)
        for _ in range(6):
            server.send_signal(signal.SIGHUP)
            time.sleep(1)
        after_seven = _settled(postgres, database)
        assert server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert after_one >= 1 and after_seven <= after_one, (after_one, after_seven)
    assert err.count("config reloaded") >= 4, err  # signals that come during a reload make one more
