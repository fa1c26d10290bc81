"""``labelflow demo`` end to end: a fresh data dir, its own broker, the real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(
    bool(os.environ.get("LABELFLOW_KAFKA_BOOTSTRAP")), reason="the demo starts its own broker"
)
def test_demo_stores_the_expected_samples_and_reports_them(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    env = cli_env
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "labelflow", "demo", "--duration", "8", "--rate", "25",
         "--seed", "7", "--bad-fraction", "0.1", "--json", str(summary_path)],
        env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    for key in ("events_in", "samples_stored", "samples_deleted", "quarantined", "dead_lettered"):
        assert isinstance(summary[key], int), key
    assert summary["events_in"] > 0
    assert summary["matches_expected_state"] is True
    assert summary["samples_stored"] > 0
    assert summary["quarantined"] > 0  # bad inputs were injected and caught
    assert sum(summary["quarantined_by_reason"].values()) == summary["quarantined"]
    assert set(summary["worker_exit_codes"].values()) == {0}
    assert "Summary" in result.stdout
    # The demo stopped the broker it started.
    assert not (tmp_path / "data" / "kafka" / "broker.pid").exists()
