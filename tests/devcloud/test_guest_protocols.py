"""The QMP and guest-agent clients against scripted peers on real unix sockets (no QEMU)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcloud.guest.hypervisor import _socket_dir
from devcloud.guest.qga import AgentError, AgentTimeout, GuestAgentClient
from devcloud.guest.qmp import QMPClient, QMPError

Peer = Callable[[socket.socket], None]


def serve_once(path: Path, peer: Peer) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            peer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def requests(conn: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = conn.recv(4096)
            if not data:
                return
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        yield json.loads(line)


def test_agent_sync_skips_stale_replies(tmp_path: Path) -> None:
    def agent(conn: socket.socket) -> None:
        # A reply to a command an earlier client abandoned is still queued on the channel.
        conn.sendall(b'{"return": {"stale": true}}\n')
        for request in requests(conn):
            if request["execute"] == "guest-sync-delimited":
                conn.sendall(b'{"return": 12}\n\xff'
                             + json.dumps({"return": request["arguments"]["id"]}).encode() + b"\n")
            elif request["execute"] == "guest-ping":
                conn.sendall(b'{"return": {}}\n')
            else:
                conn.sendall(b'{"error": {"class": "GenericError", '
                             b'"desc": "fsfreeze hook has failed with status 1"}}\n')

    sock = tmp_path / "qga"
    serve_once(sock, agent)
    with GuestAgentClient(str(sock), sync_timeout=5) as client:
        assert client.command("guest-ping") == {}
        with pytest.raises(AgentError, match="fsfreeze hook has failed") as caught:
            client.command("guest-fsfreeze-freeze")
        assert caught.value.desc == "fsfreeze hook has failed with status 1"


def test_silent_agent_times_out_instead_of_hanging(tmp_path: Path) -> None:
    sock = tmp_path / "qga"
    serve_once(sock, lambda conn: [None for _ in requests(conn)])  # reads, never answers: no agent in the guest
    with pytest.raises(AgentTimeout, match="guest-sync-delimited"):
        GuestAgentClient(str(sock), sync_timeout=0.5)


def test_qmp_keeps_events_that_arrive_before_the_reply(tmp_path: Path) -> None:
    def qemu(conn: socket.socket) -> None:
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        for request in requests(conn):
            if request["execute"] == "qmp_capabilities":
                conn.sendall(b'{"return": {}}\n')
            elif request["execute"] == "blockdev-backup":
                conn.sendall(b'{"event": "JOB_STATUS_CHANGE", "data": {"id": "j"}}\n{"return": {}}\n'
                             b'{"event": "BLOCK_JOB_COMPLETED", "data": {"device": "j", "len": 1, "offset": 1}}\n')
            else:
                conn.sendall(b'{"error": {"class": "DeviceNotFound", "desc": "Device \'x\' not found"}}\n')

    sock = tmp_path / "qmp"
    serve_once(sock, qemu)
    with QMPClient(str(sock), timeout=5) as qmp:
        assert qmp.command("blockdev-backup", device="drive-vda") == {}
        event = qmp.wait_event("BLOCK_JOB_COMPLETED", 5, lambda e: e["data"]["device"] == "j")
        assert event["data"]["offset"] == 1
        with pytest.raises(QMPError, match="Device 'x' not found"):
            qmp.command("device_del", id="x")


def test_socket_paths_stay_short_for_deep_state_dirs() -> None:
    deep = Path("/" + "/".join(["a-rather-long-directory-name"] * 20))
    path = _socket_dir(deep) / "0f000000-0000-4000-8000-000000000001.qga"
    assert len(str(path)) < 108
