"""Query scores of adapted models, and their confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .adaptation import adapt, functional_forward
from .benchmarks import Benchmark, Task
from .pattern import Pattern


def mean_ci95(scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width (normal approximation) of per-task scores."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no scores to summarise")
    spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), 1.96 * spread / math.sqrt(values.size)


def score_task(model: nn.Module, task: Task, pattern: Pattern, inner_lr: float, benchmark: Benchmark) -> float:
    """Adapts on the task's support set and scores the query set."""
    params = adapt(model, task.x_support, task.y_support, pattern, inner_lr, benchmark.loss_fn)
    with torch.no_grad():
        outputs = functional_forward(model, params, task.x_query)
    return benchmark.score_fn(outputs, task.y_query)


def score_tasks(
    model: nn.Module, tasks: Sequence[Task], pattern: Pattern, inner_lr: float, benchmark: Benchmark
) -> np.ndarray:
    """Per-task query scores of ``pattern``, one task at a time."""
    return np.array([score_task(model, task, pattern, inner_lr, benchmark) for task in tasks])
