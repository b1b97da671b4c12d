"""An experiment: a benchmark, a meta-trained checkpoint and its model, ready to adapt."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .benchmarks import Benchmark, Task, create_benchmark
from .checkpoint import Checkpoint, CheckpointError, default_checkpoint_path, load_checkpoint
from .devices import resolve_device
from .groups import LayerGroup, layer_groups
from .pattern import Pattern


@dataclass
class Experiment:
    """Everything needed to evaluate patterns of one meta-trained model.

    Attributes:
        benchmark: The task sources and scoring.
        checkpoint: The meta-trained checkpoint.
        checkpoint_path: Where it was loaded from.
        model: The model with the checkpoint's weights, on ``device``, in
            the checkpoint's mode (``train`` by default: batch norm on batch
            statistics; imported checkpoints may say ``eval``).
        groups: The model's layer groups.
        device: Where adaptation runs.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class.
        benchmark_options: Benchmark-specific options it was built with.
    """

    benchmark: Benchmark
    checkpoint: Checkpoint
    checkpoint_path: Path
    model: nn.Module
    groups: list[LayerGroup]
    device: torch.device
    ways: int
    shots: int
    queries: int
    benchmark_options: dict[str, object]

    @property
    def inner_lr(self) -> float:
        """The checkpoint's inner learning rate."""
        return self.checkpoint.inner_lr

    @property
    def full(self) -> Pattern:
        """Full MAML at the checkpoint's evaluation step count (the baseline)."""
        return Pattern.full(len(self.groups), self.checkpoint.eval_steps)

    def pattern(self, text: str | Pattern) -> Pattern:
        """Parses a pattern (aliases ``full`` and ``none`` included) for this model."""
        return Pattern.parse(text, num_groups=len(self.groups), full_steps=self.checkpoint.eval_steps)

    def tasks(self, split: str, count: int, seed: int) -> list[Task]:
        """The first ``count`` episodes of ``split``, on the device."""
        return [task.to(self.device) for task in self.benchmark.tasks(split, count, seed)]

    def with_checkpoint(self, path: str | os.PathLike[str]) -> Experiment:
        """The same benchmark, tasks and device with another checkpoint's model (e.g. a specialization's parent).

        Raises:
            CheckpointError: If that checkpoint was made for another benchmark,
                ways or shots, or its model has other layer groups.
        """
        other = load_checkpoint(path)
        mine = (self.checkpoint.benchmark, self.checkpoint.ways, self.checkpoint.shots)
        if (other.benchmark, other.ways, other.shots) != mine:
            raise CheckpointError(f"{path} was made for {other.benchmark} {other.ways}-way {other.shots}-shot, not "
                                  f"{mine[0]} {mine[1]}-way {mine[2]}-shot; its accuracies would not be paired")
        net = other.build_model(self.benchmark).to(self.device)
        groups = layer_groups(net)
        if [g.name for g in groups] != [g.name for g in self.groups]:
            raise CheckpointError(f"{path}'s model has layer groups {[g.name for g in groups]}, not "
                                  f"{[g.name for g in self.groups]}")
        return replace(self, checkpoint=other, checkpoint_path=Path(path), model=net, groups=groups)


def open_experiment(
    benchmark: str | Benchmark = "omniglot-small",
    model: str | None = None,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    data_root: str | os.PathLike[str] | None = None,
    benchmark_options: dict[str, object] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    train_if_missing: bool = False,
    train_iterations: int | None = None,
    progress: bool = True,
) -> Experiment:
    """Builds the benchmark, finds (or trains) the checkpoint and loads the model.

    Args:
        benchmark: Benchmark name (or a ready Benchmark).
        model: Model name; default: the checkpoint's, else the benchmark's.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class.
        data_root: Data folder.
        benchmark_options: Benchmark-specific options.
        checkpoint: Checkpoint path; default: the shipped or cached one for
            this benchmark, model, ways and shots.
        device: ``auto``, ``cpu`` or ``cuda``.
        train_if_missing: Meta-train a checkpoint first if there is none.
        train_iterations: Iterations for that training (benchmark default).
        progress: Show progress bars.

    Raises:
        CheckpointError: No checkpoint (and no training asked for), or one
            that does not fit the model.
    """
    options = dict(benchmark_options or {})
    bench = benchmark if isinstance(benchmark, Benchmark) else create_benchmark(
        benchmark, ways, shots, queries, data_root, **options
    )
    resolved_device = resolve_device(device)
    path = Path(checkpoint) if checkpoint else default_checkpoint_path(
        bench.name, model or bench.default_model, ways, shots
    )
    if not path.is_file():
        if not train_if_missing:
            raise CheckpointError(
                f"no checkpoint at {path}; meta-train one with 'patternsearch train --benchmark {bench.name}"
                f" --ways {ways} --shots {shots}' or pass --checkpoint"
            )
        _train_missing(bench, model, ways, shots, queries, data_root, options, str(resolved_device), path,
                       train_iterations, progress)
    ckpt = load_checkpoint(path)
    net = ckpt.build_model(bench, model)
    net.to(resolved_device)
    return Experiment(bench, ckpt, path, net, layer_groups(net), resolved_device, ways, shots, queries, options)


def _train_missing(
    bench: Benchmark,
    model: str | None,
    ways: int,
    shots: int,
    queries: int,
    data_root: str | os.PathLike[str] | None,
    options: dict[str, object],
    device: str,
    path: Path,
    iterations: int | None,
    progress: bool,
) -> None:
    from .training import TrainConfig, train

    print(f"no checkpoint at {path}: meta-training one first", file=sys.stderr)
    config = TrainConfig(
        benchmark=bench.name, model=model, ways=ways, shots=shots, queries=queries, iterations=iterations,
        data_root=os.fspath(data_root) if data_root else None, device=device, benchmark_options=options,
    )
    train(config, path, benchmark=bench, progress=progress)
