"""A disk's kept layout (engine.guestfiles.Layout): what was saved is what is loaded, and anything
else in its place is no layout at all, so it is found again rather than trusted."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackvault.engine.guestfiles import Layout


def test_a_saved_layout_loads_as_it_was(tmp_path: Path) -> None:
    layout = Layout({"/dev/sda1": "ext4", "/dev/vg0/root": "xfs", "/dev/sda2": "LVM2_member"}, "/dev/vg0/root")
    path = tmp_path / "new" / "layout.json"
    layout.save(str(path))
    assert Layout.load(str(path)) == layout


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"filesystems": {}}', '{"filesystems": ["/dev/sda"], "os_root": null}',
    '{"filesystems": {"/dev/sda": 1}, "os_root": null}', '{"filesystems": {"/dev/sda": "ext4"}, "os_root": 3}',
    '{"filesystems": {"/dev/sda": "ext4"}, "os_root": "/dev/sdb"}',
    '{"filesystems": {"/dev/sda": "ext4"}, "os_root": ["/dev/sda"]}',
], ids=["empty", "not-json", "list", "no-root-key", "list-of-devices", "number-type", "number-root",
        "root-not-found", "list-root"])
def test_anything_else_is_no_layout(tmp_path: Path, text: str) -> None:
    path = tmp_path / "layout.json"
    path.write_text(text)
    assert Layout.load(str(path)) is None


def test_no_file_is_no_layout(tmp_path: Path) -> None:
    assert Layout.load(str(tmp_path / "none.json")) is None
