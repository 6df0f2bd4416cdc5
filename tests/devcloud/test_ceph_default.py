"""`devcloud up` runs Ceph unless told not to: which flag or $DEVCLOUD_CEPH wins. Fast: no cloud."""

from __future__ import annotations

import pytest

from devcloud.cli import build_parser, context_for_up
from devcloud.context import CloudContext


def _ctx(monkeypatch, state, *flags: str, env: str | None = None) -> CloudContext:
    if env is None:
        monkeypatch.delenv("DEVCLOUD_CEPH", raising=False)
    else:
        monkeypatch.setenv("DEVCLOUD_CEPH", env)
    return context_for_up(build_parser().parse_args(["--state-dir", str(state), "up", *flags]))


@pytest.mark.parametrize(("flags", "env", "ceph"), [
    ((), None, True),  # the default
    (("--no-ceph",), None, False),
    ((), "0", False),
    ((), "no", False),
    (("--ceph",), "0", True),  # the flag beats the environment
    (("--no-ceph",), "1", False),
    ((), "1", True),
])
def test_a_new_state_dir_gets_ceph_unless_told_not_to(monkeypatch, tmp_path, flags, env, ceph):
    assert _ctx(monkeypatch, tmp_path, *flags, env=env).ceph is ceph


def test_a_state_dir_keeps_what_it_has(monkeypatch, tmp_path):
    CloudContext(state_dir=tmp_path, ceph=True).save()
    assert _ctx(monkeypatch, tmp_path, "--no-ceph").ceph, "Cinder's ceph volumes must stay reachable"
    CloudContext(state_dir=tmp_path, ceph=False).save()
    assert _ctx(monkeypatch, tmp_path).ceph, "a stopped cloud made without Ceph gets it by default"
