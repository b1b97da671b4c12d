"""Query scores of one pattern on a task list: the one function every command scores through.

A search scores many patterns on one task set and keeps a
:class:`~patternsearch.cached_scoring.CachedScorer` for that; everything
else (``evaluate``, ``bench``, ``report``, validation during training)
calls :func:`score_pattern`, which runs the same scorer, so the same pattern
on the same tasks gives the same per-task scores in every command.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from .benchmarks import Benchmark, Task
from .cached_scoring import CachedScorer
from .pattern import Pattern


def score_pattern(
    model: nn.Module, benchmark: Benchmark, tasks: Sequence[Task], pattern: Pattern, inner_lr: float
) -> np.ndarray:
    """Per-task query scores (accuracy, or -MSE) of ``pattern`` on ``tasks``, in task order.

    Raises:
        FloatingPointError: If adaptation diverges (NaN or infinite outputs).
    """
    return CachedScorer(model, benchmark, tasks, inner_lr).scores(pattern)
