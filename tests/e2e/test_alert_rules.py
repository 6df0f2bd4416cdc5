"""The shipped alert rules: every metric they use is one `stackvault metrics` exports, Prometheus'
own checker accepts them, and its rule tests (tests/e2e/data) fire each alert when it should."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .helpers import Stackvault

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "prometheus" / "stackvault-alerts.yml"
RULE_TESTS = Path(__file__).parent / "data" / "stackvault-alerts-test.yml"
PROMTOOL_MISSING = "promtool is not installed (Debian package prometheus, not a dependency of the project)"


def _exported_names(sv: Stackvault, tmp_path: Path) -> set[str]:
    """Every series name the exporter can produce (HELP lines are there even with no samples yet)."""
    out = tmp_path / "m.prom"
    sv.run("metrics", "--textfile", out)
    names = set()
    for line in out.read_text().splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names.add(m.group(1) + ("_total" if m.group(2) == "counter" else ""))
    return names


def test_the_rules_use_only_metrics_the_exporter_exports(repo: Stackvault, tmp_path: Path) -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"StackvaultNoRecentBackup", "StackvaultConsistencyBelowPolicy",
                                          "StackvaultVerifyFoundDamage", "StackvaultProxyIdle"}
    used = {name for r in rules for name in re.findall(r"\bstackvault_[a-z_]+", r["expr"])}
    exported = _exported_names(repo, tmp_path)
    assert used, "no stackvault metric found in the rules"
    assert used <= exported, f"the rules use metrics the exporter does not export: {sorted(used - exported)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason=PROMTOOL_MISSING)
def test_promtool_accepts_the_rules_and_their_tests_pass(tmp_path: Path) -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for path in (RULES, RULE_TESTS):  # the tests name the rules file beside them
        shutil.copy(path, tmp_path / path.name)
    tested = subprocess.run(["promtool", "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
