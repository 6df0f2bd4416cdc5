"""`devcloud` command-line behaviour that needs no running cloud."""

from __future__ import annotations

import socket

import pytest

from devcloud import cloud
from devcloud.cli import main, parse_ports
from devcloud.context import CloudContext, DevcloudError


def test_ports_option_names_services_or_auto():
    assert parse_ports("keystone=1234,glance=2345") == ({"keystone": 1234, "glance": 2345}, False)
    assert parse_ports("auto") == ({}, True)
    with pytest.raises(DevcloudError, match="bad --ports item 'swift=1'"):
        parse_ports("swift=1")


def test_up_names_a_port_taken_by_another_process(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ctx = CloudContext(state_dir=tmp_path, ports={"keystone": taken.getsockname()[1]})
        with pytest.raises(DevcloudError, match=r"\(keystone public\) .* is in use"):
            cloud.check_ports(ctx, skip=set())


def test_skip_accepts_only_known_parts():
    assert cloud.skipped_parts("images, nova") == {"images", "nova"}
    with pytest.raises(DevcloudError, match="cannot skip glance"):
        cloud.skipped_parts("glance")


def test_fault_cli_round_trip(tmp_path, capsys):
    state = str(tmp_path)
    assert main(["--state-dir", state, "fault", "add", "cinder", "--status", "500",
                 "--count", "2"]) == 0
    assert main(["--state-dir", state, "fault", "list"]) == 0
    assert '"kind": "status"' in capsys.readouterr().out
    assert main(["--state-dir", state, "fault", "clear"]) == 0
    assert "removed 1 rule(s)" in capsys.readouterr().out
