from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from patternsearch import TrainConfig, load_checkpoint, train
from patternsearch.checkpoint import CheckpointError


def _command(path: Path, iterations: int) -> list[str]:
    return [
        sys.executable, "-m", "patternsearch", "train", "--benchmark", "sinusoid", "--model", "mlp",
        "--shots", "5", "--queries", "5", "--meta-batch", "4", "--iterations", str(iterations),
        "--val-every", "50", "--val-tasks", "5", "--checkpoint-every", "5", "--device", "cpu",
        "--checkpoint", str(path),
    ]


def _wait_for_progress(path: Path, process: subprocess.Popen, minimum: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if path.exists():
            try:
                if load_checkpoint(path).training["iteration"] >= minimum:
                    return
            except CheckpointError:
                pass
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _deliver_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, sig: signal.Signals) -> None:
    iterations = 400
    straight = tmp_path / "straight.pt"
    subprocess.run(_command(straight, 60), check=True, capture_output=True, env=os.environ)

    resumed = tmp_path / "resumed.pt"
    # Output goes to a file: an unread pipe fills up with progress bars on a slow machine and blocks the run.
    with (tmp_path / "train.log").open("w") as log:
        # A shell starts background jobs with Ctrl-C ignored and children inherit that; a user's
        # terminal delivers it, so the child gets the default disposition back.
        process = subprocess.Popen(_command(resumed, iterations), stdout=log, stderr=subprocess.STDOUT,
                                   env=os.environ, preexec_fn=_deliver_ctrl_c)
        _wait_for_progress(resumed, process, minimum=10)
        process.send_signal(sig)
        process.wait(timeout=60)
    if sig == signal.SIGINT:
        assert process.returncode == 130
    stopped_at = load_checkpoint(resumed).training["iteration"]
    assert 10 <= stopped_at < iterations

    # Finish at 60 iterations with the same settings: the result equals the uninterrupted run.
    if stopped_at < 60:
        subprocess.run(_command(resumed, 60), check=True, capture_output=True, env=os.environ)
        a, b = load_checkpoint(straight), load_checkpoint(resumed)
        assert b.training["iteration"] == 60
        for key, value in a.state_dict.items():
            torch.testing.assert_close(b.state_dict[key], value, rtol=1e-6, atol=1e-7)
    else:
        pytest.fail(f"interrupted too late ({stopped_at})")


def test_checkpoint_records_training_and_evaluation_steps(tmp_path: Path) -> None:
    config = TrainConfig(benchmark="sinusoid", model="mlp", shots=5, queries=5, meta_batch=2, iterations=3,
                         val_every=3, val_tasks=3, device="cpu")
    ckpt = train(config, tmp_path / "c.pt", progress=False)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.train_steps == 1 and loaded.eval_steps == 10
    assert loaded.config["meta_batch"] == 2 and loaded.history[-1]["iteration"] == 3
    assert loaded.state_dict.keys() == ckpt.state_dict.keys()


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    base = dict(benchmark="sinusoid", model="mlp", shots=5, queries=5, meta_batch=2, iterations=2,
                val_every=10, val_tasks=2, device="cpu")
    train(TrainConfig(**base), tmp_path / "c.pt", progress=False)
    before = (tmp_path / "c.pt").read_bytes()
    with pytest.raises(CheckpointError, match="meta_batch: 2 -> 3"):
        train(TrainConfig(**{**base, "meta_batch": 3, "iterations": 4}), tmp_path / "c.pt", progress=False)
    assert (tmp_path / "c.pt").read_bytes() == before


def test_truncated_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    config = TrainConfig(benchmark="sinusoid", model="mlp", shots=5, queries=5, meta_batch=2, iterations=1,
                         val_every=10, val_tasks=2, device="cpu")
    train(config, tmp_path / "c.pt", progress=False)
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as error:
        load_checkpoint(tmp_path / "c.pt")
    assert "\n" not in str(error.value)
