"""The dev cloud's ceph.conf and cephx keys as devcloud.ceph writes them. Fast: no cluster."""

from __future__ import annotations

import base64
import re
import struct

from devcloud import ceph


def test_every_path_of_the_cluster_is_under_the_state_dir(tmp_path):
    text = ceph.render_conf(tmp_path, "f" * 36, "127.0.0.1", 3300, 6789)
    paths = re.findall(r"= (/\S*)", text)
    assert paths and all(p.startswith(str(tmp_path / "ceph")) for p in paths), paths
    assert "mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]" in text
    for setting in ("osd pool default size = 1", "paxos propose interval = 0.1",
                    "mon warn on pool no redundancy = false", "osd objectstore = bluestore"):
        assert setting in text


def test_cephx_keys_have_the_layout_ceph_authtool_gives_them():
    raw = base64.b64decode(ceph.new_cephx_key())
    kind, _created, _nsec, length = struct.unpack("<HIIH", raw[:12])
    assert (kind, length, len(raw)) == (1, 16, 28)
    assert ceph.new_cephx_key() != ceph.new_cephx_key()
