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
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
    check_writable,
    file_checksum,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .devices import resolve_device
from .experiment import build_benchmark, checkpoint_path
from .groups import layer_groups
from .measurement import LatencyStats, interleaved_latencies, score_pattern
from .models import create_model
from .pattern import Pattern
from .spec import ExperimentSpec

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
        val_every: Validate every this many iterations, and at the end (0:
            never; ``tune`` scores its candidates itself).
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

    @classmethod
    def for_spec(cls, spec: ExperimentSpec, **settings: Any) -> TrainConfig:
        """Training settings for an experiment spec; ``settings`` are the training-only fields.

        The spec's checkpoint is where the run is written, not a setting, so
        it is left out.
        """
        return cls(benchmark=spec.benchmark, model=spec.model, ways=spec.ways, shots=spec.shots,
                   queries=spec.queries, data_root=spec.data_root, device=spec.device,
                   benchmark_options=dict(spec.benchmark_options), **settings)

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


def _check_resumable(previous: Checkpoint, config: TrainConfig, mode: str, path: Path) -> None:
    stored, current, defaults = previous.config, asdict(config), asdict(TrainConfig())
    differences = [
        f"{key}: {stored.get(key, defaults[key])!r} -> {value!r}"
        for key, value in current.items()
        if key not in _RESUMABLE and stored.get(key, defaults[key]) != value
    ]
    if previous.mode != mode:
        differences.append(f"mode: {previous.mode!r} -> {mode!r}")
    if differences:
        raise CheckpointError(
            f"{path} was trained with other settings ({'; '.join(differences)}); "
            "use another --checkpoint path or the same settings"
        )


def _validate(model: torch.nn.Module, benchmark: Benchmark, config: TrainConfig, pattern: Pattern,
              device: torch.device) -> float:
    """Mean validation score; draws its random numbers (dropout) from a fork, leaving training's stream as it was.

    So a run validated at other iterations (a resume validates where it
    stopped) trains on the same random numbers.
    """
    tasks = [t.to(device) for t in benchmark.tasks("val", config.val_tasks, seed=config.seed)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
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



def meta_update_times(model: torch.nn.Module, benchmark: Benchmark, patterns: Sequence[Pattern], inner_lr: float,
                      *, meta_batch: int, batches: int = 1, first_order: bool = False,
                      device: torch.device | None = None, rounds: int = 3, seed: int = 7) -> dict[str, LatencyStats]:
    """Times one meta-update with each pattern as the inner loop, interleaved, after a warm-up round.

    One meta-update is what :func:`train` does per iteration, without the
    optimizer step (the same for every pattern): the weights never change
    (the gradients are dropped), so every pattern is timed on the same work.

    Args:
        model: The network (its parameters receive and lose gradients).
        benchmark: Where the training episodes come from.
        patterns: Inner-loop patterns.
        inner_lr: Inner-loop learning rate.
        meta_batch: Tasks per meta-update.
        batches: Meta-batches timed per round.
        first_order: First-order MAML.
        device: Where the model lives (default: its parameters' device).
        rounds: Timed rounds.
        seed: Seed of the timed training episodes.

    Returns:
        Per pattern (its text), the times of its meta-updates (milliseconds).
    """
    device = device or next(model.parameters()).device
    source = benchmark.split("train")
    timed_batches = [[source.task(b * meta_batch + j, seed).to(device) for j in range(meta_batch)]
                     for b in range(batches)]

    def meta_update(pattern: Pattern) -> Callable[[Sequence[Task]], float]:
        def run(tasks: Sequence[Task]) -> float:
            model.zero_grad(set_to_none=True)
            return accumulate_meta_gradient(model, tasks, pattern, inner_lr, benchmark.loss_fn,
                                            first_order=first_order)
        return run

    times = interleaved_latencies({str(p): meta_update(p) for p in patterns}, timed_batches,  # type: ignore[arg-type]
                                  device, repeats=rounds)
    model.zero_grad(set_to_none=True)
    return times


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


@dataclass
class _Run:
    """A meta-training run in progress: what moves together from one iteration to the next."""

    config: TrainConfig
    benchmark: Benchmark
    path: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    pattern: Pattern
    mode: str
    parent: dict[str, Any]
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rng_state: torch.Tensor | None = None  # torch's CPU generator at the last iteration boundary

    @property
    def validation_pattern(self) -> Pattern:
        """What validation scores: the inner pattern when one was given, else full MAML at ``eval_steps``."""
        if self.config.pattern is not None:
            return self.pattern
        return Pattern.full(self.pattern.num_groups, int(self.config.eval_steps or 1))

    def checkpoint(self) -> Checkpoint:
        """The run's state as a checkpoint."""
        config = self.config
        return Checkpoint(
            model=str(config.model), benchmark=self.benchmark.name, ways=config.ways, shots=config.shots,
            inner_lr=float(config.inner_lr or 0.0), train_steps=self.pattern.steps,
            eval_steps=int(config.eval_steps or 1),
            state_dict={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            config=asdict(config), history=self.history,
            training={"iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                      "rng_state": self.rng_state},
            mode=self.mode, pattern=None if config.pattern is None else str(self.pattern), parent=dict(self.parent),
        )

    def save(self) -> Checkpoint:
        """Writes the checkpoint atomically and returns it."""
        ckpt = self.checkpoint()
        save_checkpoint(ckpt, self.path)
        return ckpt

    def step(self, device: torch.device) -> float:
        """One meta-update on the next meta-batch of training episodes; returns the meta-loss."""
        config, meta_batch = self.config, int(self.config.meta_batch or 1)
        source = self.benchmark.split("train")
        self.optimizer.zero_grad(set_to_none=True)
        tasks = [source.task(self.iteration * meta_batch + j, config.seed).to(device) for j in range(meta_batch)]
        loss = accumulate_meta_gradient(self.model, tasks, self.pattern, float(config.inner_lr or 0.0),
                                        self.benchmark.loss_fn, first_order=config.first_order)
        with _interrupts_deferred():  # the weights and the iteration count move together
            self.optimizer.step()
            self.iteration += 1
        return loss


def _start(config: TrainConfig, benchmark: Benchmark, path: Path, initial_state: dict[str, torch.Tensor] | None,
           parent: dict[str, Any] | None, mode: str, device: torch.device) -> tuple[_Run, Checkpoint | None]:
    """A fresh run, or the one stored at ``path`` (returned too) after checking it has the same settings."""
    torch.manual_seed(config.seed)
    model = create_model(
        str(config.model), benchmark.num_outputs, input_shape=benchmark.input_shape, **config.model_kwargs
    )
    pattern = inner_pattern(config, len(layer_groups(model)))
    if config.pattern is not None:  # stored in canonical form, so equal patterns resume each other
        config = replace(config, pattern=str(pattern))
    if initial_state is not None:
        load_weights(model, initial_state, str(config.model))
    model = model.to(device).train(mode == "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config.meta_lr or 0.0))
    run = _Run(config, benchmark, path, model, optimizer, pattern, mode, dict(parent or {}))
    if not path.exists():
        run.rng_state = torch.get_rng_state()
        return run, None
    previous = load_checkpoint(path)
    _check_resumable(previous, config, mode, path)
    model.load_state_dict(previous.state_dict)
    if previous.training.get("optimizer"):
        optimizer.load_state_dict(previous.training["optimizer"])
    run.iteration, run.history = int(previous.training.get("iteration", 0)), list(previous.history)
    run.parent = dict(parent or previous.parent)
    stored_rng = previous.training.get("rng_state")
    if stored_rng is not None:
        torch.set_rng_state(stored_rng)
    run.rng_state = torch.get_rng_state()
    return run, previous


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
    is resumed, with the random state it had (dropout included), so the
    result equals an uninterrupted run's; a finished one is extended when
    ``iterations`` grew, and returned untouched (not rewritten) when not.
    The checkpoint is written atomically every ``checkpoint_every``
    iterations, at the end, and when the run is interrupted.

    Args:
        config: Training settings.
        checkpoint_path: Where the checkpoint lives (never the package's own
            checkpoint folder).
        benchmark: A ready benchmark (default: built from the config).
        progress: Show a progress bar and the validation lines.
        initial_state: Weights to start from instead of a random
            initialisation (ignored when resuming).
        parent: Lineage recorded in the checkpoint (see :func:`specialize`).
        mode: Module mode adaptation runs in (``train`` or ``eval``).

    Returns:
        The final checkpoint.

    Raises:
        CheckpointError: Another run's settings at ``checkpoint_path``, a bad
            mode, or work that would write a shipped checkpoint.
    """
    path = Path(checkpoint_path)
    if mode not in ADAPT_MODES:
        raise CheckpointError(f"mode must be one of {', '.join(ADAPT_MODES)}, got {mode!r}")
    benchmark = benchmark or create_benchmark(
        config.benchmark, config.ways, config.shots, config.queries, config.data_root, **config.benchmark_options
    )
    config = config.resolved(benchmark)
    device = resolve_device(config.device)
    run, previous = _start(config, benchmark, path, initial_state, parent, mode, device)
    total = int(run.config.iterations or 0)
    if previous is not None and run.iteration >= total:
        return previous  # finished: nothing to do, nothing rewritten
    check_writable(path)
    say = (lambda message: tqdm.write(message, file=sys.stderr)) if progress else (lambda _: None)
    elapsed = sum(record.get("seconds", 0.0) for record in run.history[-1:])
    began = time.perf_counter() - elapsed
    bar = tqdm(total=total, initial=run.iteration, desc="meta-training", unit="it", disable=not progress,
               dynamic_ncols=True)
    try:
        while run.iteration < total:
            meta_loss = run.step(device)
            bar.update(1)
            bar.set_postfix(loss=f"{meta_loss:.3f}")
            every = run.config.val_every
            if every and (run.iteration % every == 0 or run.iteration == total):
                score = _validate(run.model, benchmark, run.config, run.validation_pattern, device)
                run.history.append({"iteration": run.iteration, "val_score": score, "train_loss": meta_loss,
                                    "seconds": time.perf_counter() - began})
                say(f"iteration {run.iteration}: validation {benchmark.metric} {score:.4f}")
            run.rng_state = torch.get_rng_state()
            if run.iteration % run.config.checkpoint_every == 0:
                run.save()
    except KeyboardInterrupt:
        run.save()
        raise
    finally:
        bar.close()
    return run.save()


def ensure_checkpoint(spec: ExperimentSpec, *, benchmark: Benchmark | None = None, iterations: int | None = None,
                      progress: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """The spec's checkpoint path, after meta-training a checkpoint there first if there is none.

    Args:
        spec: The experiment (its checkpoint, or the default path of its
            benchmark, model, ways and shots).
        benchmark: The spec's benchmark, when already built.
        iterations: Meta-training iterations (default: the benchmark's).
        progress: Show progress.
        log: Where the "meta-training first" line goes (default: standard error).
    """
    bench = benchmark or build_benchmark(spec)
    path = checkpoint_path(spec, bench)
    if path.is_file():
        return path
    (log or (lambda message: print(message, file=sys.stderr)))(f"no checkpoint at {path}: meta-training one first")
    train(TrainConfig.for_spec(spec.but(benchmark=bench.name), iterations=iterations), path, benchmark=bench,
          progress=progress)
    return path


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
        val_every: Validate (with ``pattern``) every this many iterations and at the end (0: never).
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
