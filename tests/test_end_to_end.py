"""End to end on the real Omniglot archives with the shipped checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patternsearch.checkpoint import shipped_checkpoint

SHIPPED = shipped_checkpoint("omniglot-small", "conv4", 5, 1)


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "patternsearch", *args], capture_output=True, text=True,
                            env=os.environ, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_checkpoint_is_installed_as_package_data() -> None:
    assert SHIPPED is not None and SHIPPED.stat().st_size < 2 << 20


@pytest.mark.slow
def test_shipped_checkpoint_search_and_select_on_real_omniglot(omniglot_root: Path, tmp_path: Path) -> None:
    data = ["--data-root", str(omniglot_root), "--device", "cpu"]
    full = json.loads(cli("evaluate", *data, "--pattern", "full", "--split", "test", "--tasks", "100",
                          "--repeats", "2", "--json"))
    assert full["pattern"] == "11111:10" and full["tasks"] == 100
    assert full["accuracy"] >= 0.90
    storage = f"sqlite:///{tmp_path}/s.db"
    cli("optimize", *data, "--storage", storage, "--trials", "6", "--tasks", "20", "--latency-tasks", "1",
        "--repeats", "2")
    selection = json.loads(cli("select", "--storage", storage, "--data-root", str(omniglot_root), "--tasks", "40",
                               "--timed-tasks", "2", "--timed-rounds", "3", "--json"))
    assert selection["baseline"] == "11111:10"
    assert selection["validation"]["accuracy"] >= selection["validation"]["baseline_accuracy"] - 0.01
    assert selection["timing"]["speedup"] > 0 and selection["fresh"]["accuracy"] > 0.5
