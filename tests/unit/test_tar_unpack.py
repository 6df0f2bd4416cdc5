"""The unpacking of a directory's tar stream from the appliance, fed hostile streams directly.

The appliance runs a tenant's file system, so its tar stream may be crafted: these streams are
built here with tarfile (the appliance is not needed to produce them) and handed to the function
that unpacks `files get DIR` and `restore --file DIR`.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from stackvault.engine.sparse_copy import ByteBudget
from stackvault.jobs.file_restore import unpack


def _stream(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


def _unpack(tmp_path: Path, stream: io.BytesIO) -> tuple[Path, list[str]]:
    dest = tmp_path / "dest"
    dest.mkdir()
    return dest, unpack(stream, str(dest), ByteBudget(1 << 30, "the test's bound", "none"))


def _outside_untouched(outside: Path, content: bytes) -> None:
    assert outside.read_bytes() == content


def test_a_plain_tree_comes_back_with_modes_and_hard_links(tmp_path: Path) -> None:
    stream = _stream((_member("d", tarfile.DIRTYPE, mode=0o755), None),
                     (_member("d/f", mode=0o4755), b"hello"),
                     (_member("d/g", tarfile.LNKTYPE, "d/f"), None),
                     (_member("d/s", tarfile.SYMTYPE, "f"), None))
    dest, skipped = _unpack(tmp_path, stream)
    assert skipped == []
    assert (dest / "d/f").read_bytes() == b"hello"
    assert stat.S_IMODE((dest / "d/f").stat().st_mode) == 0o755, "set-uid dropped"
    assert os.path.samefile(dest / "d/f", dest / "d/g")
    assert os.readlink(dest / "d/s") == "f"


def test_a_hard_link_to_a_skipped_device_is_refused(tmp_path: Path) -> None:
    dev = _member("null", tarfile.CHRTYPE, mode=0o666)
    dev.devmajor, dev.devminor = 1, 3
    stream = _stream((dev, None), (_member("copy", tarfile.LNKTYPE, "null"), None))
    with pytest.raises(tarfile.TarError):
        _unpack(tmp_path, stream)
    assert not (tmp_path / "dest/copy").exists()
    assert not (tmp_path / "dest/null").exists()


def test_a_hard_link_through_a_long_symlink_chain_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"proxy secret")
    # a long chain of links through a directory link, ending at a file outside the target
    members = [(_member("l0", tarfile.SYMTYPE, "."), None)]
    chain = "/".join(["l0"] * 1100) + "/../secret"
    members.append((_member("escape", tarfile.LNKTYPE, chain), None))
    with pytest.raises(tarfile.TarError):
        _unpack(tmp_path, _stream(*members))
    assert not (tmp_path / "dest/escape").exists()
    assert outside.stat().st_nlink == 1
    _outside_untouched(outside, b"proxy secret")


def test_a_hard_link_to_an_outside_file_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"proxy secret")
    with pytest.raises(tarfile.TarError):
        _unpack(tmp_path, _stream((_member("x", tarfile.LNKTYPE, "../secret"), None)))
    assert outside.stat().st_nlink == 1


def test_a_member_below_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "victim").mkdir()
    stream = _stream((_member("sub", tarfile.DIRTYPE, mode=0o755), None),
                     (_member("sub/up", tarfile.SYMTYPE, ".."), None),
                     (_member("sub/up/sub/owned", mode=0o644), b"x"))
    with pytest.raises(tarfile.TarError):
        _unpack(tmp_path, stream)
    assert not (tmp_path / "dest/sub/owned").exists()


def test_a_file_member_is_not_written_through_a_symlink_of_its_name(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"proxy secret")
    stream = _stream((_member("a/b", tarfile.DIRTYPE, mode=0o755), None),
                     (_member("a/b/x", tarfile.SYMTYPE, "../.."), None),  # lexically the target itself
                     (_member("a/b/y", tarfile.SYMTYPE, "x/../secret"), None),  # lexically a/secret: really ../secret
                     (_member("a/b/y", mode=0o644), b"overwritten"))
    dest, _ = _unpack(tmp_path, stream)
    _outside_untouched(outside, b"proxy secret")
    assert (dest / "a/b/y").read_bytes() == b"overwritten"
    assert not (dest / "a/b/y").is_symlink()


def test_symlinks_leaving_the_tree_are_skipped(tmp_path: Path) -> None:
    stream = _stream((_member("abs", tarfile.SYMTYPE, "/etc/shadow"), None),
                     (_member("up", tarfile.SYMTYPE, "../../etc"), None),
                     (_member("ok", mode=0o644), b"ok"))
    dest, skipped = _unpack(tmp_path, stream)
    assert len(skipped) == 2
    assert not os.path.lexists(dest / "abs") and not os.path.lexists(dest / "up")
    assert (dest / "ok").read_bytes() == b"ok"


def test_a_member_outside_the_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(tarfile.TarError):
        _unpack(tmp_path, _stream((_member("../evil", mode=0o644), b"x")))
    assert not (tmp_path / "evil").exists()


def test_directories_keep_their_mode_and_time_once_filled(tmp_path: Path) -> None:
    top = _member("ro", tarfile.DIRTYPE, mode=0o555)
    top.mtime = 1_600_000_000
    dest, _ = _unpack(tmp_path, _stream((top, None), (_member("ro/f", mode=0o644), b"x")))
    st = (dest / "ro").stat()
    assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (0o555, 1_600_000_000)
    assert (dest / "ro/f").read_bytes() == b"x"


def test_the_extracted_directory_itself_gets_its_mode_and_time(tmp_path: Path) -> None:
    top = _member(".", tarfile.DIRTYPE, mode=0o2750)
    top.mtime = 1_500_000_000
    dest, _ = _unpack(tmp_path, _stream((top, None), (_member("./f", mode=0o644), b"x")))
    st = dest.stat()
    assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (0o750, 1_500_000_000), "set-gid dropped"
    assert (dest / "f").read_bytes() == b"x"
