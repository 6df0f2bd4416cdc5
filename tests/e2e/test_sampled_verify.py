"""A sampled deep verify (a policy's `verify_sample_percent`): each share re-reads its own chunks,
the shares together read every chunk once, and a damaged chunk is found by the run whose share holds
it, after which every share finds it missing (each checks that all chunks are present)."""

from __future__ import annotations

import random
from pathlib import Path

from stackvault.config import load_settings
from stackvault.jobs.context import JobContext
from stackvault.jobs.verify import sample_part, verify

from .helpers import MIB, Stackvault, make_random_image


def _context(repo: Stackvault) -> JobContext:
    return JobContext(load_settings(None, repo=str(repo.repo), workdir=str(repo.workdir), catalog=repo.catalog_url))


def test_four_shares_read_every_chunk_once_and_the_right_one_finds_a_damaged_chunk(
        repo: Stackvault, rng: random.Random, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(repo.root / "home"))
    repo.backup(make_random_image(tmp_path / "a.img", 4 * MIB, rng), level="full")
    shares = [verify(_context(repo), deep=True, sample=(part, 4)).to_dict() for part in range(4)]
    assert all(s["ok"] and s["sample"] == f"{n + 1}/4" for n, s in enumerate(shares)), shares
    total = shares[0]["chunks_checked"]
    assert total >= 64 and sum(s["chunks_read"] for s in shares) == total
    assert all(0 < s["chunks_read"] < total for s in shares)

    victim = sorted(p for p in (repo.repo / "chunks").rglob("*") if p.is_file())[0]
    victim.write_bytes(b"\0" + victim.read_bytes()[1:])
    part = sample_part(bytes.fromhex(victim.name), 4)
    found = verify(_context(repo), deep=True, sample=(part, 4)).to_dict()
    assert not found["ok"] and [c["chunk"] for c in found["bad_chunks"]] == [victim.name]
    assert found["set_aside"] and not victim.exists()
    # The next run reads another share; the chunk set aside is missing, and every share says so.
    other = verify(_context(repo), deep=True, sample=((part + 1) % 4, 4)).to_dict()
    assert [(c["chunk"], c["problem"]) for c in other["bad_chunks"]] == [(victim.name, "missing from the repository")]
