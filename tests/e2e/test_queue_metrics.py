"""The policy queue's depth as an operator scrapes it: items queued and claimed per policy and zone, in
the textfile and on `stackvault server --metrics`, and the alert for work no proxy takes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stackvault.catalog import Catalog
from stackvault.catalog.queue import PolicyQueue, QueueItem

from .helpers import Stackvault, announced
from .test_alert_rules import PROMTOOL_MISSING, RULES
from .test_metrics import Samples, _samples

RULE_TESTS = Path(__file__).parent / "data" / "stackvault-queue-alerts-test.yml"


def _queue(sv: Stackvault) -> str:
    """A run of policy `nightly` with two servers in az1 (one claimed) and three in az2, and a finished
    run whose items have left the queue; returns the repository id."""
    repo_id = sv.run("init", "--block-size", "64KiB").data["id"]
    queue = PolicyQueue(Catalog(sv.catalog_url), repo_id)
    done = queue.open_run("nightly", datetime(2026, 12, 6, 2, tzinfo=UTC), "full", [QueueItem("server", "s0", "old")])
    assert done is not None
    claim = queue.claim({"nightly"}, [], done)
    assert claim is not None
    queue.finish(claim, "success", {"server_id": "s0", "status": "success"})
    queue.complete_run(done, {"status": "success"})
    items = [QueueItem("server", f"a{i}", f"web-a{i}", "az1") for i in range(2)] + \
        [QueueItem("server", f"b{i}", f"web-b{i}", "az2") for i in range(3)]
    assert queue.open_run("nightly", datetime(2026, 12, 7, 2, tzinfo=UTC), "full", items) is not None
    assert queue.claim({"nightly"}, ["az1"]) is not None
    return repo_id


def _depth(samples: Samples, repo_id: str) -> dict[tuple[str, str], float]:
    return {(labels["zone"], labels["status"]): value for (name, ls), value in samples.items()
            if name == "stackvault_policy_queue_items" and (labels := dict(ls))["repo"] == repo_id
            and labels["policy"] == "nightly"}


EXPECTED = {("az1", "queued"): 1, ("az1", "claimed"): 1, ("az2", "queued"): 3, ("az2", "claimed"): 0}


def test_queue_depth_per_policy_and_zone_in_the_textfile_and_on_the_servers_metrics(
        sv: Stackvault, tmp_path: Path) -> None:
    repo_id = _queue(sv)
    textfile = tmp_path / "stackvault.prom"
    sv.run("metrics", "--textfile", textfile)
    assert _depth(_samples(textfile.read_text()), repo_id) == EXPECTED

    config = tmp_path / "sv.toml"
    config.write_text("[policy.proxy-state]\nenabled = false\n")  # the server takes none of `nightly`'s items
    server = subprocess.Popen(sv.argv(["server", "--metrics", "127.0.0.1:0"], json_out=False,
                                      globals_=["--config", str(config)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sv.env(),
                              start_new_session=True)
    try:
        address = announced(server, r"http://(\S+)/metrics")
        with urllib.request.urlopen(f"http://{address.group(1)}/metrics", timeout=30) as answer:
            assert _depth(_samples(answer.read().decode()), repo_id) == EXPECTED
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason=PROMTOOL_MISSING)
def test_the_queue_alert_fires_for_a_zone_no_proxy_takes(tmp_path: Path) -> None:
    for path in (RULES, RULE_TESTS):
        shutil.copy(path, tmp_path / path.name)
    tested = subprocess.run(["promtool", "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
