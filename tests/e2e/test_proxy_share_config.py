"""Splitting servers between proxies: bad shard and availability-zone settings are refused clearly,
and shards K/N cover every server exactly once whatever servers come and go.

The refusals come before any cloud is contacted, so this needs no dev cloud; the split of real
servers between proxy processes is tests/cloud/test_proxy_share.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from stackvault.cloud.inventory import Selection

from .helpers import Stackvault


@pytest.mark.parametrize("config, words", [
    ('[cloud]\nshard = "5/4"\n', "cloud.shard in {path} is '5/4', not K/N with 1 <= K <= N"),
    ('[cloud]\nshard = "0/3"\n', "cloud.shard in {path} is '0/3', not K/N with 1 <= K <= N"),
    ('[cloud]\nshard = "x"\n', "cloud.shard in {path} is 'x', not K/N with 1 <= K <= N"),
    ('[cloud]\nshard = 2\n', "cloud.shard in {path} must be a string"),
    ('[cloud]\navailability_zones = "az1"\n', "cloud.availability_zones in {path} must be a list of strings"),
    ('[[jobs]]\nname = "az2"\nall = true\nshard = "4/3"\n',
     "shard of job 'az2' in {path} is '4/3', not K/N with 1 <= K <= N"),
    ('[[jobs]]\nname = "az2"\nall = true\navailability_zones = "az2"\n',
     "availability_zones of job 'az2' in {path} must be a list of strings"),
])
def test_a_bad_share_in_the_config_is_one_clear_line(tmp_path: Path, config: str, words: str) -> None:
    sv = Stackvault(tmp_path / "sv")
    path = tmp_path / "stackvault.toml"
    path.write_text(config)
    res = sv.run("--config", path, "backup", "--all", json_out=False, expect=2)
    (line,) = res.error_lines()
    assert words.format(path=path) in line, res.describe()


def test_a_bad_shard_flag_names_the_flag_and_the_fix(tmp_path: Path) -> None:
    res = Stackvault(tmp_path / "sv").run("backup", "--all", "--shard", "3", json_out=False, expect=2)
    (line,) = res.error_lines()
    assert line == ("stackvault: error: --shard is '3', not K/N with 1 <= K <= N (write e.g. \"2/4\" for the "
                    "second of four proxies, each given its own K of the same N)")


def test_shards_cover_every_server_once_and_a_new_server_moves_no_other() -> None:
    servers = [SimpleNamespace(id=str(uuid.uuid4()), availability_zone="nova") for _ in range(600)]
    shards = [Selection(shard=(k, 4)) for k in (1, 2, 3, 4)]
    owner = {s.id: [k for k, sel in enumerate(shards, 1) if sel.covers(s)] for s in servers}
    assert all(len(ks) == 1 for ks in owner.values())  # exactly one proxy each
    sizes = [sum(ks == [k] for ks in owner.values()) for k in (1, 2, 3, 4)]
    assert min(sizes) > 100, sizes  # and shared out about evenly
    servers.append(SimpleNamespace(id=str(uuid.uuid4()), availability_zone="nova"))
    assert all([k for k, sel in enumerate(shards, 1) if sel.covers(s)] == owner[s.id] for s in servers[:-1])
    in_az1 = Selection(availability_zones=["az1"], shard=(1, 1))
    assert not in_az1.covers(servers[0]) and in_az1.covers(SimpleNamespace(id="x", availability_zone="az1"))
