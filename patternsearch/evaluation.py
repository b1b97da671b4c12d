"""Evaluate one pattern: query score with its CI, adaptation latency and FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .adaptation import adapt
from .benchmarks import Benchmark, Task
from .devices import device_name
from .flops import adaptation_flops
from .pattern import Pattern
from .scoring import score_pattern
from .timing import interleaved_latencies
from .uncertainty import TaskDesign, estimate


@dataclass(frozen=True)
class Evaluation:
    """What ``patternsearch evaluate`` reports for one pattern.

    Attributes:
        pattern: Pattern in ``FLAGS:STEPS`` form.
        accuracy: Mean query score over the tasks (accuracy, or -MSE).
        ci95: 95% confidence half-width of ``accuracy`` (tasks that share
            classes counted as correlated, see :mod:`patternsearch.uncertainty`).
        latency_ms: Median adaptation latency of one task.
        latency_iqr_ms: Inter-quartile range of the latency samples.
        flops: FLOPs of one adaptation.
        tasks: Number of tasks scored.
        classes: Distinct classes they drew (None without classes).
        units: Distinct independent units (Omniglot: characters).
        split: Split the tasks came from.
        metric: Name of the score.
        device: Where it ran.
    """

    pattern: str
    accuracy: float
    ci95: float
    latency_ms: float
    latency_iqr_ms: float
    flops: int
    tasks: int
    classes: int | None
    units: int | None
    split: str
    metric: str
    device: str

    def as_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def measure_pattern_latency(
    model: nn.Module,
    benchmark: Benchmark,
    pattern: Pattern,
    inner_lr: float,
    tasks: Sequence[Task],
    device: torch.device,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> tuple[float, float]:
    """Median and inter-quartile range (ms) of adapting to one of ``tasks``."""
    stats = interleaved_latencies(
        {"pattern": lambda t: adapt(model, t.x_support, t.y_support, pattern, inner_lr, benchmark.loss_fn)},
        tasks, device, repeats=repeats, warmup=warmup,
    )["pattern"]
    return stats.median_ms, stats.spread_ms


def evaluate_pattern(
    model: nn.Module,
    benchmark: Benchmark,
    pattern: Pattern,
    inner_lr: float,
    tasks: Sequence[Task],
    *,
    split: str,
    device: torch.device,
    latency_tasks: int = 5,
    repeats: int = 5,
) -> Evaluation:
    """Scores ``pattern`` on ``tasks`` and times its adaptation.

    Args:
        model: Meta-trained model, on ``device``.
        benchmark: Supplies the loss and the score.
        pattern: Pattern to evaluate.
        inner_lr: Inner learning rate.
        tasks: Tasks on ``device``.
        split: Name of the split, for the report.
        device: Where it runs.
        latency_tasks: How many of the tasks are timed.
        repeats: Timed rounds per task (after one warm-up round).
    """
    accuracy = estimate(score_pattern(model, benchmark, tasks, pattern, inner_lr), TaskDesign.of(tasks))
    latency, spread = measure_pattern_latency(
        model, benchmark, pattern, inner_lr, tasks[:latency_tasks], device, repeats=repeats
    )
    return Evaluation(
        pattern=str(pattern),
        accuracy=accuracy.mean,
        ci95=accuracy.ci95,
        latency_ms=latency,
        latency_iqr_ms=spread,
        flops=adaptation_flops(model, tasks[0], pattern, inner_lr, benchmark.loss_fn),
        tasks=len(tasks),
        classes=accuracy.classes,
        units=accuracy.units,
        split=split,
        metric=benchmark.metric,
        device=device_name(device),
    )
