"""The prepared GPU check runs (here on the CPU, tiny); CUDA-only checks run where a GPU exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from patternsearch import Pattern, adapt, create_model, reference_adapt
from patternsearch.measurement import exact_precision, time_call

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_gpu_check_script_runs_on_the_cpu(omniglot_root: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "gpu_check.py"), "--device", "cpu", "--data-root",
                          str(omniglot_root), "--out", str(tmp_path), "--trials", "3", "--tasks", "20",
                          "--test-tasks", "12", "--bench-tasks", "1", "--bench-repeats", "1",
                          "--random-patterns", "2"],
                         check=True, capture_output=True, text=True, timeout=600, env=os.environ)
    summary = json.loads(out.stdout)
    assert summary["equivalence"]["max_relative_error"] < 1e-5
    assert summary["equivalence"]["max_batched_score_difference"] <= 1.01 / 75
    assert {row["name"] for row in summary["bench"]} >= {"full", "plain-loop", "00010:2"}
    assert summary["study"]["complete"] >= 1 and summary["select"]["pattern"]
    deployed = summary["deployed"]
    assert deployed[0]["pattern"] == "11111:10" and all(row["path"].startswith("deployed:") for row in deployed)
    assert all(row["max_logit_difference"] < 1e-3 for row in deployed)
    assert all(row["plain_loop_speedup"] > 0 for row in summary["bench"] if row["name"] != "plain-loop")
    assert summary["environment"]["torch"] == torch.__version__
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_adaptation_matches_the_reference_and_times_the_measured_device() -> None:
    device = torch.device(f"cuda:{torch.cuda.device_count() - 1}")
    torch.manual_seed(0)
    model = create_model("conv4", 5).to(device).train()
    x, y = torch.randn(5, 1, 28, 28, device=device), torch.arange(5, device=device)
    with exact_precision():
        for text in ("11111:3", "00111:2", "00001:5"):
            fast = adapt(model, x, y, Pattern.parse(text), 0.4)
            slow = reference_adapt(model, x, y, Pattern.parse(text), 0.4)
            assert max(float((fast[k] - slow[k]).abs().max() / slow[k].abs().max()) for k in slow) < 1e-5
    elapsed, result = time_call(lambda: adapt(model, x, y, Pattern.parse("11111:3"), 0.4, check_finite=False), device)
    assert elapsed > 0 and all(t.device == device for t in result.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_deployed_adapter_replays_cuda_graphs_and_predicts_like_eager() -> None:
    from patternsearch import DeployedAdapter, functional_forward

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("conv4", 5).to(device).train()
    x, y, query = (torch.randn(5, 1, 28, 28, device=device), torch.arange(5, device=device),
                   torch.randn(75, 1, 28, 28, device=device))
    adapter = DeployedAdapter(model, "00011:2", 0.4, example=(x, y, query))
    assert adapter.path.adapt == adapter.path.predict == "compiled, CUDA graphs", adapter.path
    with exact_precision():
        expected = functional_forward(model, adapt(model, x, y, Pattern.parse("00011:2"), 0.4), query)
    first = adapter(x, y, query)
    second = adapter(x, y, query)  # a replay must not overwrite what the first call returned
    assert torch.allclose(first, expected, atol=1e-3) and torch.equal(first, second)
