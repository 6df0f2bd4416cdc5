"""`state backup` into a plain repository leaves the notification URLs out of the saved config: their
tokens sit in the URL's path (`json://host/hooks/TOKEN`), under a key that does not say "secret"."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import zstandard

from .helpers import MIB, Stackvault, make_random_image

TOKEN = "hook-t0ken-8f3a"


@pytest.mark.parametrize("urls", [
    f'urls = ["json://hooks.example.net/{TOKEN}"]',
    f'urls = [\n  "json://hooks.example.net/{TOKEN}",\n  "tgram://{TOKEN}/12345",\n]',
])
def test_notification_urls_are_not_saved_in_a_plain_repository(tmp_path: Path, urls: str) -> None:
    sv = Stackvault(tmp_path / "sv")
    sv.init("64KiB")
    sv.backup(make_random_image(tmp_path / "disk.img", MIB, random.Random(5)))
    cfg = tmp_path / "sv.toml"
    cfg.write_text(f'[retention]\nkeep_last = 3\n\n[notify]\n{urls}\non = ["failure"]\n')

    saved = sv.run("state", "backup", globals_=["--config", str(cfg)]).data
    assert saved["config_saved"], saved
    assert any("notify.urls" in w for w in saved["warnings"]), saved["warnings"]
    stored = b"".join(zstandard.ZstdDecompressor().decompress(p.read_bytes()[40:], max_output_size=1 << 26)
                      for p in (sv.repo / "proxy-state").iterdir())
    assert TOKEN.encode() not in stored, "a notification token reached the plain store"

    out = tmp_path / "restored.toml"
    sv.run("state", "restore", "--config-out", str(out), "--yes")
    restored = out.read_text()
    assert TOKEN not in restored and "keep_last = 3" in restored and 'on = ["failure"]' in restored, restored
