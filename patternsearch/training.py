"""MAML meta-training (second order by default), resumable from its checkpoint.

The inner loop is full MAML, or any pattern (``train --pattern``): then it
runs :func:`~patternsearch.adapt`'s fast path (backward stops at the first
flagged group, the frozen prefix runs once per task) while the outer loop
still updates every parameter. :func:`specialize` continues an existing
checkpoint's meta-training with a pattern as its inner loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .adaptation import LossFn, adapt, functional_forward
from .benchmarks import Benchmark, Task, create_benchmark
from .checkpoint import (
    ADAPT_MODES,
    Checkpoint,
    CheckpointError,
    file_checksum,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
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
        pattern: Inner-loop pattern text (None: full MAML at ``train_steps``).
        parent_sha256: Checksum of the checkpoint a specialization continues.
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
    pattern: str | None = None
    parent_sha256: str | None = None

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


def _validate(model: torch.nn.Module, benchmark: Benchmark, config: TrainConfig, pattern: Pattern,
              device: torch.device) -> float:
    tasks = [t.to(device) for t in benchmark.tasks("val", config.val_tasks, seed=config.seed)]
    return float(score_pattern(model, benchmark, tasks, pattern, float(config.inner_lr or 0.0)).mean())


def inner_pattern(config: TrainConfig, num_groups: int) -> Pattern:
    """The inner loop of meta-training: ``config.pattern``, else full MAML at ``train_steps``."""
    if config.pattern is not None:
        return Pattern.parse(config.pattern, num_groups=num_groups).canonical()
    return Pattern.full(num_groups, int(config.train_steps or 1))


def accumulate_meta_gradient(
    model: torch.nn.Module,
    tasks: Sequence[Task],
    pattern: Pattern,
    inner_lr: float,
    loss_fn: LossFn,
    *,
    first_order: bool = False,
) -> float:
    """Adds the MAML outer gradient of ``tasks`` to the parameters' ``.grad``.

    Each task adapts with ``pattern`` from the live parameters (second order
    unless ``first_order``); the outer loss is the mean query loss after
    adaptation, differentiated with respect to every parameter.

    Returns:
        The mean query loss.
    """
    total = 0.0
    for task in tasks:
        adapted = adapt(model, task.x_support, task.y_support, pattern, inner_lr, loss_fn,
                        params=dict(model.named_parameters()), create_graph=not first_order, first_order=first_order)
        loss = loss_fn(functional_forward(model, adapted, task.x_query), task.y_query) / len(tasks)
        loss.backward()
        total += float(loss.detach())
    return total



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
    initial_state: dict[str, torch.Tensor] | None = None,
    parent: dict[str, Any] | None = None,
    mode: str = "train",
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
        initial_state: Weights to start from instead of a random
            initialisation (ignored when resuming).
        parent: Lineage recorded in the checkpoint (see :func:`specialize`).
        mode: Module mode adaptation runs in (``train`` or ``eval``).

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
    )
    if mode not in ADAPT_MODES:
        raise CheckpointError(f"mode must be one of {', '.join(ADAPT_MODES)}, got {mode!r}")
    pattern = inner_pattern(config, len(layer_groups(model)))
    if config.pattern is not None:  # stored in canonical form, so equal patterns resume each other
        config = replace(config, pattern=str(pattern))
    # Validation scores what the checkpoint is for: its pattern, else full MAML at the evaluation step count.
    validation_pattern = pattern if config.pattern is not None else Pattern.full(pattern.num_groups,
                                                                                  int(config.eval_steps or 1))
    if initial_state is not None:
        load_weights(model, initial_state, str(config.model))
    model = model.to(device).train(mode == "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config.meta_lr or 0.0))
    start, history = 0, []
    if path.exists():
        previous = load_checkpoint(path)
        _check_resumable(previous.config, config, path)
        model.load_state_dict(previous.state_dict)
        if previous.training.get("optimizer"):
            optimizer.load_state_dict(previous.training["optimizer"])
        start, history = int(previous.training.get("iteration", 0)), list(previous.history)
        parent = parent or previous.parent

    source = benchmark.split("train")
    total = int(config.iterations or 0)
    meta_batch = int(config.meta_batch or 1)
    elapsed = sum(record.get("seconds", 0.0) for record in history[-1:])

    def checkpoint(iteration: int) -> Checkpoint:
        ckpt = Checkpoint(
            model=str(config.model), benchmark=benchmark.name, ways=config.ways, shots=config.shots,
            inner_lr=float(config.inner_lr or 0.0), train_steps=pattern.steps,
            eval_steps=int(config.eval_steps or 1),
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            config=asdict(config), history=history,
            training={"iteration": iteration, "optimizer": optimizer.state_dict()},
            mode=mode, pattern=None if config.pattern is None else str(pattern), parent=dict(parent or {}),
        )
        save_checkpoint(ckpt, path)
        return ckpt

    iteration = start
    began = time.perf_counter() - elapsed
    bar = tqdm(total=total, initial=start, desc="meta-training", unit="it", disable=not progress, dynamic_ncols=True)
    try:
        while iteration < total:
            optimizer.zero_grad(set_to_none=True)
            tasks = [source.task(iteration * meta_batch + j, config.seed).to(device) for j in range(meta_batch)]
            meta_loss = accumulate_meta_gradient(model, tasks, pattern, float(config.inner_lr or 0.0),
                                                 benchmark.loss_fn, first_order=config.first_order)
            with _interrupts_deferred():  # the weights and the iteration count move together
                optimizer.step()
                iteration += 1
            bar.update(1)
            bar.set_postfix(loss=f"{meta_loss:.3f}")
            if iteration % config.val_every == 0 or iteration == total:
                score = _validate(model, benchmark, config, validation_pattern, device)
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


def specialize(
    source: str | Path,
    pattern: str,
    iterations: int,
    out: str | Path,
    *,
    meta_batch: int | None = None,
    meta_lr: float | None = None,
    first_order: bool | None = None,
    seed: int = 1,
    val_every: int = 100,
    val_tasks: int = 100,
    checkpoint_every: int = 25,
    data_root: str | os.PathLike[str] | None = None,
    device: str = "auto",
    benchmark: Benchmark | None = None,
    progress: bool = True,
) -> Checkpoint:
    """Continues meta-training of a checkpoint with ``pattern`` as the inner loop.

    The new checkpoint at ``out`` starts from the source's weights (with a
    fresh Adam state), keeps its inner learning rate, evaluation step count
    and therefore its ``full`` baseline, records the pattern and its parent
    (checksum, path, and the parent's own pattern), and resumes like
    :func:`train` (resuming from another parent or with another pattern is
    refused).

    Args:
        source: The checkpoint to specialize.
        pattern: Inner-loop pattern text (e.g. the one ``select`` chose).
        iterations: Meta-updates of the specialization in total.
        out: Where the specialized checkpoint is written.
        meta_batch: Tasks per meta-update (default: the source's).
        meta_lr: Adam learning rate (default: the source's).
        first_order: First-order MAML (default: as the source was trained).
        seed: Seeds the training episodes (1: other episodes than a source
            trained with the default seed 0 saw first).
        val_every: Validate (with ``pattern``) every this many iterations.
        val_tasks: Validation episodes.
        checkpoint_every: Write the checkpoint every this many iterations.
        data_root: Data folder.
        device: ``cpu``, ``cuda`` or ``auto``.
        benchmark: A ready benchmark (default: the source's).
        progress: Show a progress bar.

    Returns:
        The specialized checkpoint.

    Raises:
        CheckpointError: Unreadable source, or ``out`` is the source itself.
    """
    source, out = Path(source), Path(out)
    if out.exists() and out.resolve() == source.resolve():
        raise CheckpointError(f"--out {out} is the source checkpoint; write the specialization to another file")
    parent = load_checkpoint(source)
    stored = parent.config
    checksum = file_checksum(source)
    config = TrainConfig(
        benchmark=parent.benchmark, model=parent.model, ways=parent.ways, shots=parent.shots,
        queries=int(stored.get("queries", 15)), inner_lr=parent.inner_lr, train_steps=parent.train_steps or None,
        eval_steps=parent.eval_steps, meta_batch=meta_batch or stored.get("meta_batch"),
        meta_lr=meta_lr or stored.get("meta_lr"), iterations=iterations,
        first_order=bool(stored.get("first_order", False)) if first_order is None else first_order, seed=seed,
        val_every=val_every, val_tasks=val_tasks, checkpoint_every=checkpoint_every,
        model_kwargs=dict(stored.get("model_kwargs", {})), benchmark_options=dict(stored.get("benchmark_options", {})),
        data_root=None if data_root is None else os.fspath(data_root), device=device, pattern=pattern,
        parent_sha256=checksum,
    )
    return train(config, out, benchmark=benchmark, progress=progress, initial_state=parent.state_dict,
                 parent={"sha256": checksum, "path": str(source), "pattern": parent.pattern}, mode=parent.mode)
