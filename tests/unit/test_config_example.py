"""The checked-in example config is what the generator prints, and the product's loader takes it."""

from pathlib import Path

from stackvault.config import load_settings
from stackvault.config_example import example_config

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "stackvault.example.toml"


def test_checked_in_example_is_current():
    assert EXAMPLE.read_text(encoding="utf-8") == example_config(), "run `make config-example` and commit the result"


def test_example_loads_and_matches_the_defaults():
    settings = load_settings(str(EXAMPLE))
    assert settings.cloud.timeout == 1800.0 and settings.notify.on == ["failure", "warning", "summary"]
    assert settings.block_size == 512 << 10 and settings.ceph.verify_sample == 0.005


def test_commented_examples_load_when_uncommented(tmp_path):
    """The [policy.NAME] and [[jobs]] examples are valid once the `# ` before their lines is taken off."""
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = text[text.index("# [policy.nightly]"):].splitlines()
    config = tmp_path / "stackvault.toml"
    config.write_text("\n".join(line[2:] for line in tables
                                if (line.startswith("# ") and not line.startswith("# # ") and "=" in line)
                                or line in ("# [policy.nightly]", "# [[jobs]]")) + "\n", encoding="utf-8")
    settings = load_settings(str(config))
    nightly = settings.policies["nightly"]
    assert nightly.servers == ["web-*"] and nightly.full_on == ["sun"] and nightly.retention.keep_daily == 7
    assert [job.name for job in settings.jobs] == ["prod"] and settings.jobs[0].servers == ["db-1", "web-*"]
