"""Fast query scores of many patterns on one fixed task set.

A search scores hundreds of patterns on the same validation tasks. The tasks'
features at each stage boundary depend only on the meta-trained weights, so
they are computed once per task set (support and query, batch statistics per
task) and reused by every pattern whose frozen prefix ends at that boundary.
Each pattern then runs only its suffix: the inner steps on the cached support
features and one query forward from the cached query features.

The results equal :func:`patternsearch.scoring.score_tasks` (same operations
on the same values). Latency is never measured here: it is measured on real
end-to-end adaptations (see :mod:`patternsearch.timing`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .adaptation import adaptation_plan, copied_buffers, model_stages, run_suffix_steps, stage_part, suffix_tensors
from .benchmarks import Benchmark, Task
from .pattern import Pattern

_DEFAULT_CACHE_BYTES = 4 << 30


class CachedScorer:
    """Scores patterns on a fixed task set, reusing prefix features across patterns.

    Args:
        model: Meta-trained model (on the tasks' device); not modified.
        benchmark: Supplies the loss and the score.
        tasks: The fixed task set.
        inner_lr: Inner learning rate.
        cache_bytes: Memory budget for cached features; boundaries beyond it
            are recomputed when needed.
    """

    def __init__(
        self,
        model: nn.Module,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        inner_lr: float,
        *,
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks to score")
        self.model, self.benchmark, self.tasks, self.inner_lr = model, benchmark, list(tasks), inner_lr
        self.cache_bytes = cache_bytes
        self._num_stages = len(model_stages(model))
        raw = [(t.x_support, t.x_query) for t in self.tasks]
        self._features: dict[int, list[tuple[Tensor, Tensor]]] = {0: raw}
        self._params = {name: p.detach() for name, p in model.named_parameters()}

    def __len__(self) -> int:
        return len(self.tasks)

    def _cached_bytes(self) -> int:
        return sum(s.numel() * s.element_size() + q.numel() * q.element_size()
                   for features in self._features.values() for s, q in features)

    def features(self, cut: int) -> list[tuple[Tensor, Tensor]]:
        """Per task, support and query features after the first ``cut`` stages."""
        if cut in self._features:
            return self._features[cut]
        start = max(c for c in self._features if c <= cut)
        part = stage_part(self.model, start, cut)
        tensors = {local: self._params[name] for local, name in part.param_names}
        tensors.update(copied_buffers(part.module))
        with torch.no_grad():
            result = [
                (functional_call(part.module, tensors, (s,)), functional_call(part.module, tensors, (q,)))
                for s, q in self._features[start]
            ]
        size = sum(s.numel() * s.element_size() + q.numel() * q.element_size() for s, q in result)
        if self._cached_bytes() + size <= self.cache_bytes:
            self._features[cut] = result
        return result

    def scores(self, pattern: Pattern) -> np.ndarray:
        """Per-task query scores of ``pattern`` (accuracy, or -MSE).

        Raises:
            FloatingPointError: If adaptation diverges (NaN or infinite loss).
        """
        score_fn = self.benchmark.score_fn
        if pattern.is_none:
            outputs = [q for _, q in self.features(self._num_stages)]
            return np.array([score_fn(out, task.y_query) for out, task in zip(outputs, self.tasks, strict=True)])
        plan = adaptation_plan(self.model, pattern)
        suffix = suffix_tensors(plan, self._params, copied_buffers(self.model))
        scores = []
        for (support, query), task in zip(self.features(plan.cut), self.tasks, strict=True):
            adapted = run_suffix_steps(
                plan, suffix, support, task.y_support, pattern.steps, self.inner_lr, self.benchmark.loss_fn
            )
            with torch.no_grad():
                outputs = functional_call(plan.suffix.module, adapted, (query,))
            scores.append(score_fn(outputs, task.y_query))
        return np.array(scores)
