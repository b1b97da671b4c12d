"""Fast query scores of many patterns on one fixed task set.

A search scores hundreds of patterns on the same validation tasks, and much of
that work is shared between patterns:

* **prefix features**: the tasks' features at each stage boundary depend only
  on the meta-trained weights, so they are computed once per task set (support
  and query, batch statistics per task) and reused by every pattern whose
  frozen prefix ends at that boundary;
* **trajectories**: patterns with the same flags follow the same SGD
  trajectory, so ``F:7`` continues from the stored state of ``F:4`` instead
  of starting over.

Each pattern then runs only the missing inner steps on its suffix and one
query forward from the cached query features. On the CPU the tasks are scored
by parallel threads (one intra-op thread each), and images and conv
weights are kept in the channels-last memory format, which oneDNN convolves
about 1.6x faster for query-sized batches. The results equal
:func:`patternsearch.reference.reference_scores` up to floating-point rounding (the
same operations on the same values, in another memory layout). Latency is
never measured here: it is measured on real end-to-end adaptations (see
:mod:`patternsearch.timing`).
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor, nn

from .adaptation import (
    AdaptationPlan,
    adaptation_plan,
    copied_buffers,
    model_stages,
    run_suffix_steps,
    stage_part,
    suffix_tensors,
)
from .benchmarks import Benchmark, Task
from .pattern import Pattern

_DEFAULT_FEATURE_BYTES = 4 << 30
_DEFAULT_TRAJECTORY_BYTES = 2 << 30

_State = dict[int, dict[str, Tensor]]  # task index -> adapted suffix tensors (flagged ones only)


def _bytes(tensors: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _layout(tensor: Tensor) -> Tensor:
    """Channels-last for 4-D tensors on the CPU (faster oneDNN convolutions); others unchanged.

    A copy with explicit channels-last strides: for one input channel (Omniglot)
    ``contiguous(memory_format=channels_last)`` keeps the NCHW strides, which
    count as channels-last too, and the whole forward then runs NCHW with a
    weight reorder per convolution (about 1.4x slower).
    """
    if tensor.dim() == 4 and tensor.device.type == "cpu":
        return tensor.clone(memory_format=torch.channels_last)
    return tensor


class _ShardScorer:
    """Scores patterns on a fixed task set, reusing prefix features and SGD trajectories.

    Args:
        model: Meta-trained model (on the tasks' device); not modified.
        benchmark: Supplies the loss and the score.
        tasks: The fixed task set.
        inner_lr: Inner learning rate.
        feature_bytes: Memory budget for cached prefix features; tasks beyond
            it get their features computed once per scoring call.
        trajectory_bytes: Memory budget for stored adaptation states (least
            recently used first out).
    """

    def __init__(
        self,
        model: nn.Module,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        inner_lr: float,
        *,
        feature_bytes: int = _DEFAULT_FEATURE_BYTES,
        trajectory_bytes: int = _DEFAULT_TRAJECTORY_BYTES,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks to score")
        self.model, self.benchmark, self.tasks, self.inner_lr = model, benchmark, list(tasks), inner_lr
        self.feature_bytes, self.trajectory_bytes = feature_bytes, trajectory_bytes
        self._num_stages = len(model_stages(model))
        self._features: dict[int, dict[int, tuple[Tensor, Tensor]]] = {
            0: {i: (_layout(t.x_support), _layout(t.x_query)) for i, t in enumerate(self.tasks)}
        }
        self._cached_bytes = 0  # prefix features beyond the inputs
        self.features_computed = 0  # task-boundary feature computations, for tests and benchmarks
        self._trajectories: OrderedDict[tuple[tuple[bool, ...], int], _State] = OrderedDict()
        self._trajectory_sizes: dict[tuple[tuple[bool, ...], int], int] = {}
        self._params = {name: _layout(p.detach()) for name, p in model.named_parameters()}
        self.steps_run = 0  # inner steps actually computed, summed over tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def features(self, cut: int, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """Support and query features after the first ``cut`` stages, for the tasks at ``indices``.

        Features are kept while they fit in the memory budget; tasks beyond it
        are computed for this call only. A task's features are thus computed
        at most once per call, and a search scores each task once per trial.
        """
        stored = self._features.setdefault(cut, {})
        missing = [i for i in dict.fromkeys(indices) if i not in stored]
        computed = dict(zip(missing, self._compute(cut, missing), strict=True))
        if computed:
            # When the whole task set fits, compute the rest now: every later call then finds its tasks
            # ready, and the threads share the work evenly instead of a few tasks per call each.
            rest = [i for i in range(len(self.tasks)) if i not in stored and i not in computed]
            per_task = _bytes(next(iter(computed.values())))
            if rest and self._cached_bytes + per_task * (len(computed) + len(rest)) <= self.feature_bytes:
                computed.update(zip(rest, self._compute(cut, rest), strict=True))
        transient: dict[int, tuple[Tensor, Tensor]] = {}
        for i, pair in computed.items():
            size = _bytes(pair)
            if self._cached_bytes + size <= self.feature_bytes:
                stored[i] = pair
                self._cached_bytes += size
            else:
                transient[i] = pair
        return [stored[i] if i in stored else transient[i] for i in indices]

    def _compute(self, cut: int, tasks: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """Features at ``cut`` for ``tasks``, each from the deepest boundary it has cached below ``cut``."""
        self.features_computed += len(tasks)
        result: dict[int, tuple[Tensor, Tensor]] = {}
        by_start: dict[int, list[int]] = {}
        for i in tasks:
            start = max(c for c, stored in self._features.items() if c < cut and i in stored)
            by_start.setdefault(start, []).append(i)
        for start, group in by_start.items():
            part = stage_part(self.model, start, cut)
            tensors = {local: self._params[name] for local, name in part.param_names}
            tensors.update(copied_buffers(part.module))
            with torch.no_grad():
                for i in group:
                    support, query = self._features[start][i]
                    result[i] = (part(tensors, support), part(tensors, query))
        return [result[i] for i in tasks]

    def _resume_point(self, pattern: Pattern, task: int) -> tuple[int, dict[str, Tensor] | None]:
        """The stored state of ``task`` with the most steps not beyond ``pattern.steps``, for the same flags."""
        best = max((steps for (flags, steps), state in self._trajectories.items()
                    if flags == pattern.flags and steps <= pattern.steps and task in state), default=0)
        if not best:
            return 0, None
        key = (pattern.flags, best)
        self._trajectories.move_to_end(key)
        return best, self._trajectories[key][task]

    def _store(self, pattern: Pattern, plan: AdaptationPlan, adapted: dict[int, dict[str, Tensor]]) -> None:
        flagged = {local for local, name in plan.suffix.param_names if name in set(plan.flagged)}
        key = (pattern.flags, pattern.steps)
        state = self._trajectories.setdefault(key, {})
        state.update({task: {k: v for k, v in tensors.items() if k in flagged} for task, tensors in adapted.items()})
        self._trajectories.move_to_end(key)
        self._trajectory_sizes[key] = _bytes([t for tensors in state.values() for t in tensors.values()])
        while sum(self._trajectory_sizes.values()) > self.trajectory_bytes:
            oldest, _ = self._trajectories.popitem(last=False)
            del self._trajectory_sizes[oldest]

    def scores(self, pattern: Pattern, tasks: Sequence[int] | None = None) -> np.ndarray:
        """Query scores of ``pattern`` (accuracy, or -MSE) on ``tasks`` (indices; default all), in that order.

        Raises:
            FloatingPointError: If adaptation diverges (NaN or infinite loss).
        """
        indices = list(range(len(self.tasks)) if tasks is None else tasks)
        score_fn = self.benchmark.score_fn
        if pattern.is_none:
            outputs = self.features(self._num_stages, indices)
            return np.array([score_fn(out[1], self.tasks[i].y_query) for i, out in zip(indices, outputs, strict=True)])
        plan = adaptation_plan(self.model, pattern)
        suffix = suffix_tensors(plan, self._params, copied_buffers(self.model))
        features = self.features(plan.cut, indices)
        scores, adapted_all = [], {}
        for i, (support, query) in zip(indices, features, strict=True):
            task = self.tasks[i]
            done, state = self._resume_point(pattern, i)
            start = {**suffix, **state} if state is not None else suffix
            adapted = run_suffix_steps(
                plan, start, support, task.y_support, pattern.steps - done, self.inner_lr, self.benchmark.loss_fn
            )
            with torch.no_grad():
                outputs = plan.suffix(adapted, query)
            if not torch.isfinite(outputs).all():
                raise FloatingPointError(f"pattern {pattern} gave non-finite outputs; is the inner learning rate "
                                         "too high?")
            scores.append(score_fn(outputs, task.y_query))
            self.steps_run += pattern.steps - done
            if pattern.steps > done:
                adapted_all[i] = adapted
        if adapted_all:
            self._store(pattern, plan, adapted_all)
        return np.array(scores)


def default_threads(device: torch.device) -> int:
    """Scoring threads: the CPU cores this process may use (at most 8), or 1 on a GPU."""
    if device.type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


class CachedScorer:
    """Scores patterns on a fixed task set, reusing prefix features and SGD trajectories.

    Tiny per-task tensors keep PyTorch's intra-op threads idle, so on the CPU
    the tasks are split into shards scored by parallel threads, each with one
    intra-op thread and its own copy of the model (adaptation binds tensors on
    a per-model copy, which threads must not share).

    Args:
        model: Meta-trained model (on the tasks' device); not modified.
        benchmark: Supplies the loss and the score.
        tasks: The fixed task set.
        inner_lr: Inner learning rate.
        threads: Parallel shards (default: :func:`default_threads`).
        feature_bytes: Memory budget for cached prefix features (all shards).
        trajectory_bytes: Memory budget for stored adaptation states (all shards).
    """

    def __init__(
        self,
        model: nn.Module,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        inner_lr: float,
        *,
        threads: int | None = None,
        feature_bytes: int = _DEFAULT_FEATURE_BYTES,
        trajectory_bytes: int = _DEFAULT_TRAJECTORY_BYTES,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks to score")
        device = tasks[0].x_support.device
        count = max(1, min(threads or default_threads(device), len(tasks)))
        bounds = np.linspace(0, len(tasks), count + 1).astype(int)
        self._shards = [
            _ShardScorer(model if i == 0 else copy.deepcopy(model), benchmark, tasks[a:b], inner_lr,
                         feature_bytes=feature_bytes // count, trajectory_bytes=trajectory_bytes // count)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]

    def __len__(self) -> int:
        return sum(len(shard) for shard in self._shards)

    @property
    def steps_run(self) -> int:
        """Inner steps actually computed, summed over tasks."""
        return sum(shard.steps_run for shard in self._shards)

    @property
    def features_computed(self) -> int:
        """Prefix-feature computations (one per task and boundary), summed over shards."""
        return sum(shard.features_computed for shard in self._shards)

    def scores(self, pattern: Pattern, tasks: Sequence[int] | None = None) -> np.ndarray:
        """Query scores of ``pattern`` (accuracy, or -MSE) on ``tasks`` (indices; default all), in that order.

        Each shard owns a contiguous block of tasks, so a subset keeps every
        thread busy when it spreads over the whole range (a strided subset).

        Raises:
            FloatingPointError: If adaptation diverges (NaN or infinite loss).
        """
        indices = np.arange(len(self)) if tasks is None else np.asarray(tasks, dtype=int)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"task indices must lie in [0, {len(self)})")
        starts = np.cumsum([0] + [len(shard) for shard in self._shards])
        owner = np.searchsorted(starts, indices, side="right") - 1
        jobs = [(shard, indices[owner == i] - starts[i], owner == i) for i, shard in enumerate(self._shards)
                if (owner == i).any()]
        if len(jobs) == 1:
            parts = [shard.scores(pattern, local) for shard, local, _ in jobs]
        else:
            # Threads live for this call only: none outlives it, also when a shard raises (the pool
            # waits for the others). Each computes on one core; the count is set inside each worker,
            # since PyTorch's thread count is per calling thread, and workers left at the default keep
            # idle thread teams that halve the speed of the main thread's later work.
            with ThreadPoolExecutor(len(jobs), initializer=torch.set_num_threads, initargs=(1,)) as pool:
                parts = list(pool.map(lambda job: job[0].scores(pattern, job[1]), jobs))
        result = np.empty(indices.size)
        for (_, _, positions), part in zip(jobs, parts, strict=True):
            result[positions] = part
        return result
