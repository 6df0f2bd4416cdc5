"""What a person reads: the job report (Bacula-like), `list` and `show` without --json."""

from __future__ import annotations

import random
from pathlib import Path

from .helpers import MIB, Stackvault, churn, make_random_image


def test_human_reports_name_the_backup_and_end_with_a_newline(repo: Stackvault, rng: random.Random,
                                                              tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 4 * MIB, rng)
    first = repo.run("backup", "--source", f"file:{src}", json_out=False)
    churn(src, rng, writes=3)
    second = repo.run("backup", "--source", f"file:{src}", "--level", "incremental", json_out=False)
    ids = repo.list_ids()
    for res, bid, level in ((first, ids[0], "full"), (second, ids[1], "incremental")):
        text = res.stdout
        assert bid in text, f"the report names the backup id {bid}\n{text}"
        assert level in text.lower(), f"the report names the level {level}\n{text}"
        assert "status" in text.lower(), text
        assert text.endswith("\n"), f"the report must end with a newline: {text[-40:]!r}"

    listing = repo.run("list", json_out=False).stdout
    assert all(bid in listing for bid in ids) and listing.endswith("\n"), listing
    shown = repo.run("show", ids[-1], json_out=False).stdout
    assert ids[-1] in shown and "disk.img" in shown and shown.endswith("\n"), shown
