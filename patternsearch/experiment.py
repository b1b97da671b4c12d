"""An experiment: a benchmark, a meta-trained checkpoint and its model, ready to adapt."""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .benchmarks import Benchmark, Task, create_benchmark
from .checkpoint import Checkpoint, CheckpointError, default_checkpoint_path, load_checkpoint, shipped_checkpoint
from .devices import resolve_device
from .groups import GroupSummary, LayerGroup, group_summaries, layer_groups
from .models import MODELS, create_model
from .pattern import Pattern
from .spec import ExperimentSpec
from .tables import text_table


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

    def with_checkpoint(self, path: str | os.PathLike[str] | None) -> Experiment:
        """The same benchmark, tasks and device with another checkpoint's model (e.g. a specialization's parent).

        The one place that decides which checkpoint a side of a comparison
        adapts: itself when ``path`` is None or its own file (the two sides
        then share one model and one scorer), else that checkpoint's model.

        Raises:
            CheckpointError: If that checkpoint was made for another benchmark,
                ways or shots, or its model has other layer groups.
        """
        if path is None or Path(path).resolve() == self.checkpoint_path.resolve():
            return self
        other = load_checkpoint(path)
        check_pairable(other, self.checkpoint.benchmark, self.checkpoint.ways, self.checkpoint.shots, path)
        net = other.build_model(self.benchmark).to(self.device)
        groups = layer_groups(net)
        if [g.name for g in groups] != [g.name for g in self.groups]:
            raise CheckpointError(f"{path}'s model has layer groups {[g.name for g in groups]}, not "
                                  f"{[g.name for g in self.groups]}")
        return replace(self, checkpoint=other, checkpoint_path=Path(path), model=net, groups=groups)

    def specialization_warning(self, pattern: Pattern,
                               baseline_checkpoint: str | os.PathLike[str] | None) -> str | None:
        """Why comparing ``pattern`` here with the baseline on ``baseline_checkpoint`` misleads, if it does.

        A specialized checkpoint was meta-trained for its own pattern: with
        another pattern it is not the network it was trained to be, and its
        baseline is its parent (full MAML on the specialized weights is not
        what the specialization is measured against).

        Returns:
            One sentence, or None when the comparison is the intended one.
        """
        special = self.checkpoint
        if special.pattern is None or not special.parent:
            return None
        parent = f"{special.parent.get('path', '?')} (sha256 {str(special.parent.get('sha256', ''))[:12]}...)"
        if str(pattern.canonical()) != special.pattern:
            return (f"{self.checkpoint_path} was specialized for {special.pattern}, not {pattern.canonical()}: with "
                    f"another pattern it is not the network it was trained to be; its parent {parent} is the "
                    "baseline to compare with (--baseline-checkpoint)")
        if baseline_checkpoint is None or Path(baseline_checkpoint).resolve() == self.checkpoint_path.resolve():
            return f"the baseline adapts the specialized checkpoint itself; compare with its parent {parent} " \
                   "(--baseline-checkpoint)"
        return None


def check_pairable(other: Checkpoint, benchmark: str, ways: int, shots: int, path: str | os.PathLike[str]) -> None:
    """Refuses a checkpoint made for another benchmark, ways or shots than the one it is compared with.

    Raises:
        CheckpointError: Its accuracies would not be paired on the same tasks.
    """
    if (other.benchmark, other.ways, other.shots) != (benchmark, ways, shots):
        raise CheckpointError(f"{path} was made for {other.benchmark} {other.ways}-way {other.shots}-shot, not "
                              f"{benchmark} {ways}-way {shots}-shot; its accuracies would not be paired")


def checkpoint_path(spec: ExperimentSpec, benchmark: Benchmark | None = None) -> Path:
    """The spec's checkpoint: as given, else the shipped or cached one of its benchmark, model, ways and shots.

    Args:
        spec: The experiment.
        benchmark: Its benchmark, when built already; else it is built (which
            may read or download its data) only when the spec names neither a
            checkpoint nor a model, to learn the benchmark's default model.
    """
    if spec.checkpoint:
        return Path(spec.checkpoint)
    if spec.model:
        return default_checkpoint_path(spec.benchmark, spec.model, spec.ways, spec.shots)
    benchmark = benchmark or build_benchmark(spec)
    return default_checkpoint_path(benchmark.name, benchmark.default_model, spec.ways, spec.shots)


def build_benchmark(spec: ExperimentSpec) -> Benchmark:
    """The spec's benchmark (loads or downloads its data)."""
    return create_benchmark(spec.benchmark, spec.ways, spec.shots, spec.queries, spec.data_root,
                            **spec.benchmark_options)


def open_checkpoint(path: str | os.PathLike[str] | None = None, *, data_root: str | os.PathLike[str] | None = None,
                    device: str = "auto", queries: int | None = None) -> Experiment:
    """The experiment of a checkpoint's own benchmark, ways and shots (default: the shipped parent checkpoint).

    Args:
        path: The checkpoint (default: the shipped parent).
        data_root: Data folder.
        device: Where it runs.
        queries: Query examples per class (default: the checkpoint's).

    Raises:
        CheckpointError: The file is missing or not a patternsearch checkpoint.
    """
    path = path or shipped_checkpoint("omniglot-small", "conv4", 5, 1)
    if path is None:
        raise CheckpointError("no shipped checkpoint in this installation; pass --checkpoint")
    spec = load_checkpoint(path).spec(path, data_root=None if data_root is None else str(data_root), device=device)
    return open_experiment(spec if queries is None else replace(spec, queries=queries))


def open_experiment(spec: ExperimentSpec | None = None, *, benchmark: Benchmark | None = None) -> Experiment:
    """Builds the benchmark, loads the checkpoint and its model; trains nothing.

    Args:
        spec: What to open (default: the shipped omniglot-small conv4 5-way 1-shot).
        benchmark: A ready benchmark to use instead of building the spec's.

    Raises:
        CheckpointError: No checkpoint at the spec's path (the message says
            how to train one), or one that does not fit the model.
    """
    spec = spec or ExperimentSpec()
    bench = benchmark or build_benchmark(spec)
    path = checkpoint_path(spec, bench)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; meta-train one with 'patternsearch train --benchmark {bench.name}"
            f" --ways {spec.ways} --shots {spec.shots} --checkpoint {path}' or pass --checkpoint"
        )
    ckpt = load_checkpoint(path)
    device = resolve_device(spec.device)
    net = ckpt.build_model(bench, spec.model).to(device)
    return Experiment(bench, ckpt, path, net, layer_groups(net), device, spec.ways, spec.shots, spec.queries,
                      dict(spec.benchmark_options))


@dataclass(frozen=True)
class ModelGroups:
    """A model's layer groups as ``patternsearch groups`` shows them.

    Attributes:
        model: The model's name.
        input_shape: The shape of one example the FLOPs were counted on.
        groups: Index, name, parameters and share of forward FLOPs of each group.
    """

    model: str
    input_shape: tuple[int, ...]
    groups: tuple[GroupSummary, ...]

    def to_dict(self) -> list[dict[str, object]]:
        """JSON-ready form (what ``groups --json`` prints): one object per group."""
        return [asdict(group) for group in self.groups]

    def describe(self) -> str:
        """The lines ``groups`` prints."""
        return (f"{self.model}: {len(self.groups)} layer groups (a pattern has one flag per group, in this order); "
                f"input {','.join(map(str, self.input_shape))}\n"
                + text_table(["index", "group", "parameters", "FLOPs share"],
                             [(g.index, g.name, f"{g.parameters:,}", f"{100 * g.flops_share:.1f}%")
                              for g in self.groups]))


def model_groups(spec: ExperimentSpec, input_shape: tuple[int, ...] | None = None) -> ModelGroups:
    """The layer groups of the spec's model (``patternsearch groups``).

    Args:
        spec: The model, and the benchmark that gives its input shape and outputs.
        input_shape: One example's shape; with it, or with a model whose factory
            has a default input shape, no data is read.
    """
    shape = input_shape or (None if spec.model is None else _default_input_shape(spec.model))
    if shape is not None:  # the groups come from the model alone: no data needed
        outputs, name = spec.ways, spec.model or "conv4"
    else:
        benchmark = build_benchmark(spec)
        shape, outputs, name = benchmark.input_shape, benchmark.num_outputs, spec.model or benchmark.default_model
    model = create_model(name, outputs, input_shape=shape)
    return ModelGroups(name, tuple(shape), tuple(group_summaries(model, torch.zeros(2, *shape))))


def _default_input_shape(model: str) -> tuple[int, ...] | None:
    """The input shape a model's factory defaults to (None when it has no default)."""
    try:
        parameter = inspect.signature(MODELS.get(model)).parameters.get("input_shape")
    except (TypeError, ValueError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return tuple(int(size) for size in parameter.default)
