"""The meta-training loop: resumable from its checkpoint, saved atomically, Ctrl-C deferred past a save."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..benchmarks import Benchmark, create_benchmark
from ..checkpoint import (
    ADAPT_MODES,
    Checkpoint,
    CheckpointError,
    check_writable,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from ..devices import resolve_device
from ..experiment import build_benchmark, checkpoint_path
from ..groups import layer_groups
from ..models import create_model
from ..pattern import Pattern
from ..spec import ExperimentSpec
from ._config import TrainConfig, check_resumable
from ._steps import accumulate_meta_gradient, inner_pattern, validate


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
    check_resumable(previous, config, mode, path)
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
                score = validate(run.model, benchmark, run.config, run.validation_pattern, device)
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
