"""MAML meta-training (second order by default), resumable from its checkpoint."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .adaptation import adapt, functional_forward
from .benchmarks import Benchmark, create_benchmark
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .devices import resolve_device
from .groups import layer_groups
from .measurement import score_pattern
from .models import create_model
from .pattern import Pattern

# Settings that may differ when a run is resumed (they do not change the result so far).
_RESUMABLE = {"iterations", "val_every", "checkpoint_every", "device", "data_root"}


@dataclass
class TrainConfig:
    """Meta-training settings. ``None`` means the benchmark's default.

    Attributes:
        benchmark: Benchmark name.
        model: Model name or plug-in reference.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class in training episodes.
        inner_lr: Inner-loop SGD learning rate.
        train_steps: Inner steps during meta-training.
        eval_steps: Inner steps at evaluation (the ``full`` pattern).
        meta_batch: Tasks per meta-update.
        meta_lr: Adam learning rate.
        iterations: Meta-updates in total.
        first_order: First-order MAML instead of second order.
        seed: Seeds the initial weights and the training episodes.
        val_every: Validate every this many iterations.
        val_tasks: Validation episodes.
        checkpoint_every: Write the checkpoint every this many iterations.
        model_kwargs: Extra model factory options.
        benchmark_options: Extra benchmark options.
        data_root: Data folder.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    benchmark: str = "omniglot-small"
    model: str | None = None
    ways: int = 5
    shots: int = 1
    queries: int = 15
    inner_lr: float | None = None
    train_steps: int | None = None
    eval_steps: int | None = None
    meta_batch: int | None = None
    meta_lr: float | None = None
    iterations: int | None = None
    first_order: bool = False
    seed: int = 0
    val_every: int = 100
    val_tasks: int = 100
    checkpoint_every: int = 25
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    benchmark_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    device: str = "auto"

    def resolved(self, benchmark: Benchmark) -> TrainConfig:
        """A copy with every ``None`` replaced by the benchmark's default."""
        defaults = benchmark.defaults
        values = asdict(self)
        values["model"] = self.model or benchmark.default_model
        for name in ("inner_lr", "train_steps", "eval_steps", "meta_batch", "meta_lr", "iterations"):
            if values[name] is None:
                values[name] = getattr(defaults, name)
        if values["data_root"] is not None:
            values["data_root"] = os.fspath(values["data_root"])
        return TrainConfig(**values)


def _check_resumable(stored: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current, defaults = asdict(config), asdict(TrainConfig())
    differences = [
        f"{key}: {stored.get(key, defaults[key])!r} -> {value!r}"
        for key, value in current.items()
        if key not in _RESUMABLE and stored.get(key, defaults[key]) != value
    ]
    if differences:
        raise CheckpointError(
            f"{path} was trained with other settings ({'; '.join(differences)}); "
            "use another --checkpoint path or the same settings"
        )


def _validate(model: torch.nn.Module, benchmark: Benchmark, config: TrainConfig, device: torch.device) -> float:
    groups = len(layer_groups(model))
    tasks = [t.to(device) for t in benchmark.tasks("val", config.val_tasks, seed=config.seed)]
    pattern = Pattern.full(groups, config.eval_steps or 1)
    return float(score_pattern(model, benchmark, tasks, pattern, float(config.inner_lr or 0.0)).mean())



@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Holds Ctrl-C (and SIGTERM) back until the block has run, then raises it.

    An interrupt inside the optimizer step would checkpoint half-updated
    weights, or updated weights under the previous iteration number, and the
    resumed run would diverge from an uninterrupted one. Signal handlers can
    only be set from the main thread; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    if received:
        raise KeyboardInterrupt


def train(
    config: TrainConfig,
    checkpoint_path: str | Path,
    *,
    benchmark: Benchmark | None = None,
    progress: bool = True,
) -> Checkpoint:
    """Meta-trains a model with MAML and writes its checkpoint.

    If ``checkpoint_path`` holds an unfinished run with the same settings it
    is resumed; a finished one is extended when ``iterations`` grew. The
    checkpoint is written atomically every ``checkpoint_every`` iterations, at
    the end, and when the run is interrupted.

    Args:
        config: Training settings.
        checkpoint_path: Where the checkpoint lives.
        benchmark: A ready benchmark (default: built from the config).
        progress: Show a progress bar.

    Returns:
        The final checkpoint.
    """
    path = Path(checkpoint_path)
    benchmark = benchmark or create_benchmark(
        config.benchmark, config.ways, config.shots, config.queries, config.data_root, **config.benchmark_options
    )
    config = config.resolved(benchmark)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = create_model(
        str(config.model), benchmark.num_outputs, input_shape=benchmark.input_shape, **config.model_kwargs
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config.meta_lr or 0.0))
    start, history = 0, []
    if path.exists():
        previous = load_checkpoint(path)
        _check_resumable(previous.config, config, path)
        model.load_state_dict(previous.state_dict)
        if previous.training.get("optimizer"):
            optimizer.load_state_dict(previous.training["optimizer"])
        start, history = int(previous.training.get("iteration", 0)), list(previous.history)

    pattern = Pattern.full(len(layer_groups(model)), int(config.train_steps or 1))
    source = benchmark.split("train")
    total = int(config.iterations or 0)
    meta_batch = int(config.meta_batch or 1)
    elapsed = sum(record.get("seconds", 0.0) for record in history[-1:])

    def checkpoint(iteration: int) -> Checkpoint:
        ckpt = Checkpoint(
            model=str(config.model), benchmark=benchmark.name, ways=config.ways, shots=config.shots,
            inner_lr=float(config.inner_lr or 0.0), train_steps=int(config.train_steps or 1),
            eval_steps=int(config.eval_steps or 1),
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            config=asdict(config), history=history,
            training={"iteration": iteration, "optimizer": optimizer.state_dict()},
        )
        save_checkpoint(ckpt, path)
        return ckpt

    iteration = start
    began = time.perf_counter() - elapsed
    bar = tqdm(total=total, initial=start, desc="meta-training", unit="it", disable=not progress, dynamic_ncols=True)
    try:
        while iteration < total:
            optimizer.zero_grad(set_to_none=True)
            meta_loss = 0.0
            for j in range(meta_batch):
                task = source.task(iteration * meta_batch + j, config.seed).to(device)
                adapted = adapt(
                    model, task.x_support, task.y_support, pattern, float(config.inner_lr or 0.0),
                    benchmark.loss_fn, params=dict(model.named_parameters()),
                    create_graph=not config.first_order, first_order=config.first_order,
                )
                loss = benchmark.loss_fn(functional_forward(model, adapted, task.x_query), task.y_query) / meta_batch
                loss.backward()
                meta_loss += float(loss.detach())
            with _interrupts_deferred():  # the weights and the iteration count move together
                optimizer.step()
                iteration += 1
            bar.update(1)
            bar.set_postfix(loss=f"{meta_loss:.3f}")
            if iteration % config.val_every == 0 or iteration == total:
                score = _validate(model, benchmark, config, device)
                history.append({"iteration": iteration, "val_score": score, "train_loss": meta_loss,
                                "seconds": time.perf_counter() - began})
                bar.write(f"iteration {iteration}: validation {benchmark.metric} {score:.4f}")
            if iteration % config.checkpoint_every == 0:
                checkpoint(iteration)
    except KeyboardInterrupt:
        checkpoint(iteration)
        bar.close()
        raise
    bar.close()
    return checkpoint(iteration)
