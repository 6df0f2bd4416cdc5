"""Long jobs are never silent: bars on a terminal, a line every N seconds off one, JSON events under --json."""

from __future__ import annotations

import json
import os
import pty
import random
import re
import subprocess
from pathlib import Path

from .helpers import MIB, Stackvault, make_random_image


def test_json_progress_events_on_stderr_and_one_document_on_stdout(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", 4 * MIB, random.Random(5))
    res = repo.run("backup", "--source", f"file:{src}", globals_=["--progress-interval", "0"])
    assert res.data["status"] == "success"  # stdout is still the one report
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    assert events, res.describe()
    assert {e["event"] for e in events} == {"progress"} and {e["disk"] for e in events} == {"d.img"}
    assert all(e["bytes_total"] == 4 * MIB for e in events)
    done = [e["bytes_done"] for e in events]
    assert done == sorted(done) and done[-1] <= 4 * MIB


def test_off_a_terminal_a_progress_line_per_interval(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", 4 * MIB, random.Random(6))
    res = repo.run("backup", "--source", f"file:{src}", json_out=False, globals_=["--progress-interval", "0s"])
    lines = [line for line in res.stderr.splitlines() if line.startswith("stackvault: progress: d.img: ")]
    assert lines and all(re.search(r"\d+% \(.* of 4\.0 MiB, .*/s, \d+ s\)$", line) for line in lines), res.describe()
    quiet = repo.run("backup", "--source", f"file:{src}", json_out=False)  # the default interval: 30 s
    assert "progress" not in quiet.stderr


def _on_a_terminal(sv: Stackvault, *args: str) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (as a person at a shell); returns (exit, stdout, terminal text)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(sv.argv(list(args), json_out=False), stdout=subprocess.PIPE, stderr=follower,
                            stdin=subprocess.DEVNULL, env=sv.env() | {"TERM": "xterm", "COLUMNS": "120"}, text=True)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other side closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait(timeout=300)
    os.close(leader)
    return rc, out, seen.decode(errors="replace")


def _visible(term: str) -> str:
    """What the terminal shows, without its control sequences (colours, cursor moves, showing the cursor)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term)


def test_on_a_terminal_one_bar_per_disk_ending_on_a_clean_line(repo: Stackvault, tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", 4 * MIB, random.Random(7))
    b = make_random_image(tmp_path / "b.img", 4 * MIB, random.Random(8))
    rc, out, term = _on_a_terminal(repo, "backup", "--source", f"file:{a}", "--source", f"file:{b}")
    assert rc == 0, term
    last_frame = term.rsplit("\x1b[1A\x1b[2K", 1)[-1]  # the display redraws its lines in place: the final one
    final = [line for line in _visible(last_frame).replace("\r", "").split("\n")
             if line.strip()]
    assert [line.split()[0] for line in final] == ["a.img", "b.img"], term  # each disk keeps its own line
    assert all("100%" in line and "4.0/4.0 MiB" in line for line in final), final
    assert _visible(term).endswith("\n"), f"the display leaves the cursor mid-line: {term[-80:]!r}"
    bid = re.search(r"Backup (\S+)", out)
    assert bid, out
    restored = tmp_path / "r.raw"
    rc, out, term = _on_a_terminal(repo, "restore", bid.group(1), "--disk", "b.img", "--to", f"file:{restored}")
    assert rc == 0 and _visible(term).endswith("\n"), f"a restore leaves a stray character: {term[-80:]!r}"
    assert restored.read_bytes() == b.read_bytes()
