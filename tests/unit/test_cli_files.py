"""The checked-in man page and shell completions are what scripts/cli-files makes from the parser today,
and the bash completion completes commands and options in a real bash."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-files")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "cli-files"), str(out)], check=True,
                   env={"PYTHONPATH": str(ROOT / "src"), "COLUMNS": "40"})
    return out


@pytest.mark.parametrize("name", ["man/stackvault.1", "completion/stackvault.bash", "completion/_stackvault"])
def test_checked_in_file_is_current(generated, name):
    assert (PACKAGING / name).read_text() == (generated / name).read_text(), "run `make man` and commit the result"


def test_man_page_names_every_command():
    from stackvault.cli.command import load_commands

    page = (PACKAGING / "man" / "stackvault.1").read_text()
    for name in load_commands():
        assert f"'stackvault {name.replace('-', chr(92) + '-')}'" in page


def _complete(*words: str) -> list[str]:
    script = (f"source {PACKAGING / 'completion' / 'stackvault.bash'}; COMP_WORDS=(stackvault {' '.join(words)}); "
              f"COMP_CWORD={len(words)}; _shtab_stackvault; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    return subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout.split()


def test_bash_completes_commands_and_options():
    assert _complete("run-") == ["run-policy"]
    assert "--level" in _complete("backup", "--le")
