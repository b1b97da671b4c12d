from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from patternsearch import Pattern, TrainConfig, create_benchmark, create_model, layer_groups, load_checkpoint, train
from patternsearch.checkpoint import CheckpointError, file_checksum
from patternsearch.training import accumulate_meta_gradient, specialize


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


def _naive_outer_gradient(model: torch.nn.Module, tasks: list, pattern: Pattern, inner_lr: float) -> dict:
    """MAML's second-order outer gradient, written out: every step differentiates the whole model and updates
    the groups its phase flags; the mean query loss is differentiated with respect to every parameter."""
    groups = layer_groups(model)
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for task in tasks:
        params = dict(model.named_parameters())
        for phase in pattern.phases:
            flagged = {n for g, f in zip(groups, phase.flags, strict=True) if f for n in g.params}
            for _ in range(phase.steps):
                loss = F.mse_loss(functional_call(model, params, (task.x_support,)), task.y_support)
                grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
                params = {n: p - inner_lr * phase.scale * g if n in flagged else p
                          for (n, p), g in zip(params.items(), grads, strict=True)}
        outer = F.mse_loss(functional_call(model, params, (task.x_query,)), task.y_query) / len(tasks)
        for name, grad in zip(total, torch.autograd.grad(outer, list(model.parameters())), strict=True):
            total[name] += grad
    return total


@pytest.mark.parametrize("text", ["001:3", "111:1+001:2@2", "010:2@0.5"])
def test_pattern_meta_gradient_equals_a_naive_outer_step(text: str) -> None:
    torch.manual_seed(0)
    bench = create_benchmark("sinusoid", shots=5, queries=5)
    model = create_model("mlp", 1).double()
    tasks = [bench.split("train").task(i, 0) for i in range(3)]
    tasks = [type(t)(t.x_support.double(), t.y_support.double(), t.x_query.double(), t.y_query.double())
             for t in tasks]
    pattern = Pattern.parse(text)
    model.zero_grad(set_to_none=True)
    accumulate_meta_gradient(model, tasks, pattern, 0.01, F.mse_loss)
    naive = _naive_outer_gradient(model, tasks, pattern, 0.01)
    for name, param in model.named_parameters():
        error = float((param.grad - naive[name]).norm() / naive[name].norm().clamp_min(1e-30))
        assert error < 1e-5, (name, error)


def test_specialization_moves_weights_as_the_outer_loop_says_and_records_lineage(
        sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    source_bytes = sinusoid_checkpoint.read_bytes()
    out = tmp_path / "special.pt"
    ckpt = specialize(sinusoid_checkpoint, "001:3", 1, out, meta_batch=2, meta_lr=1e-3, val_every=50, val_tasks=2,
                      device="cpu", progress=False)
    assert sinusoid_checkpoint.read_bytes() == source_bytes  # the parent is never touched
    assert ckpt.pattern == "001:3" and ckpt.train_steps == 3 and ckpt.eval_steps == 10
    assert ckpt.parent == {"sha256": file_checksum(sinusoid_checkpoint), "path": str(sinusoid_checkpoint),
                           "pattern": None}
    # Adam's first step is -lr * g / (|g| + eps), g the naive outer gradient of the same two episodes.
    parent = load_checkpoint(sinusoid_checkpoint)
    bench = create_benchmark("sinusoid", shots=5, queries=10)
    model = create_model("mlp", 1)
    model.load_state_dict(parent.state_dict)
    tasks = [bench.split("train").task(j, 1) for j in range(2)]
    naive = _naive_outer_gradient(model, tasks, Pattern.parse("001:3"), parent.inner_lr)
    for name, before in parent.state_dict.items():
        g = naive[name]
        expected = before - 1e-3 * g / (g.abs() + 1e-8)
        torch.testing.assert_close(ckpt.state_dict[name], expected, rtol=1e-4, atol=1e-6)


def test_specialization_resumes_and_refuses_another_pattern_or_its_source(sinusoid_checkpoint: Path,
                                                                          tmp_path: Path) -> None:
    options = dict(meta_batch=2, val_every=2, val_tasks=2, checkpoint_every=1, device="cpu", progress=False)
    straight = specialize(sinusoid_checkpoint, "011:2", 4, tmp_path / "straight.pt", **options)
    specialize(sinusoid_checkpoint, "011:2", 2, tmp_path / "resumed.pt", **options)
    resumed = specialize(sinusoid_checkpoint, "011:2@1", 4, tmp_path / "resumed.pt", **options)  # same pattern
    assert resumed.training["iteration"] == 4 and [h["iteration"] for h in resumed.history] == [2, 4]
    for key, value in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value, rtol=1e-6, atol=1e-7)
    before = (tmp_path / "resumed.pt").read_bytes()
    with pytest.raises(CheckpointError, match="pattern: '011:2' -> '001:2'"):
        specialize(sinusoid_checkpoint, "001:2", 6, tmp_path / "resumed.pt", **options)
    assert (tmp_path / "resumed.pt").read_bytes() == before
    with pytest.raises(CheckpointError, match="is the source checkpoint"):
        specialize(sinusoid_checkpoint, "001:2", 6, sinusoid_checkpoint, **options)


DROPOUT_MODEL = '''
from torch import nn


def dropout_mlp(num_classes=1, input_shape=(1,)):
    return nn.Sequential(nn.Linear(input_shape[-1], 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, num_classes))
'''


def test_a_resumed_run_with_dropout_equals_the_straight_run(tmp_path: Path) -> None:
    # The checkpoint keeps the random state: dropout masks after a resume are those of the straight run.
    source = tmp_path / "dropout_model.py"
    source.write_text(DROPOUT_MODEL)
    base = dict(benchmark="sinusoid", model=f"{source}:dropout_mlp", shots=5, queries=5, meta_batch=2,
                val_every=2, val_tasks=2, checkpoint_every=1, device="cpu")
    straight = train(TrainConfig(**base, iterations=6), tmp_path / "straight.pt", progress=False)
    train(TrainConfig(**base, iterations=3), tmp_path / "resumed.pt", progress=False)
    torch.manual_seed(12345)  # whatever happened in between
    resumed = train(TrainConfig(**base, iterations=6), tmp_path / "resumed.pt", progress=False)
    for key, value in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value, rtol=0, atol=0)


def test_resuming_in_another_mode_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(benchmark="sinusoid", model="mlp", shots=5, queries=5, meta_batch=2, iterations=1,
                         val_every=1, val_tasks=2, device="cpu")
    train(config, tmp_path / "c.pt", progress=False)
    with pytest.raises(CheckpointError, match="mode: 'train' -> 'eval'"):
        train(config, tmp_path / "c.pt", progress=False, mode="eval")


def test_training_without_progress_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(benchmark="sinusoid", model="mlp", shots=5, queries=5, meta_batch=2, iterations=2,
                         val_every=1, val_tasks=2, device="cpu")
    train(config, tmp_path / "c.pt", progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_the_shipped_checkpoint_is_never_rewritten(omniglot_root: Path, tmp_path: Path) -> None:
    from patternsearch.checkpoint import shipped_checkpoint

    shipped = shipped_checkpoint("omniglot-small", "conv4", 5, 1)
    assert shipped is not None
    before = file_checksum(shipped)
    settings = ["--data-root", str(omniglot_root), "--meta-batch", "16", "--val-every", "250", "--val-tasks", "200"]
    # The shipped settings on another device and data path: the run is finished, so nothing is written.
    done = subprocess.run([sys.executable, "-m", "patternsearch", "train", *settings, "--iterations", "3000",
                           "--device", "cpu"], capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "iteration 3000" in done.stdout and file_checksum(shipped) == before
    # More iterations would write package data: refused in one line before any training.
    more = subprocess.run([sys.executable, "-m", "patternsearch", "train", *settings, "--iterations", "3001"],
                          capture_output=True, text=True, env=os.environ, timeout=120)
    assert more.returncode == 2 and "shipped with the package" in more.stderr
    assert len(more.stderr.strip().splitlines()) == 1 and file_checksum(shipped) == before
    with pytest.raises(CheckpointError, match="shipped with the package"):
        train(TrainConfig(benchmark="sinusoid", model="mlp", shots=5, iterations=1, device="cpu"),
              shipped.parent / "sinusoid-mlp-new.pt", progress=False)
    assert not (shipped.parent / "sinusoid-mlp-new.pt").exists()
