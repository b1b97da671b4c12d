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
:mod:`patternsearch.measurement`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..adaptation import (
    AdaptationPlan,
    adaptation_plan,
    copied_buffers,
    model_stages,
    run_suffix_steps,
    stage_part,
    suffix_tensors,
)
from ..benchmarks import Benchmark, Task
from ..pattern import Pattern

_MAX_FEATURE_BYTES = 4 << 30
_MAX_TRAJECTORY_BYTES = 2 << 30


def memory_budgets(device: torch.device) -> tuple[int, int]:
    """Default cache budgets (features, trajectories): a quarter and an eighth of the device's free memory.

    Free memory is the GPU's (``torch.cuda.mem_get_info``) on CUDA and the
    available RAM on the CPU, capped at 4 GiB and 2 GiB.
    """
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not a POSIX system: assume the caps fit
            free = 4 * _MAX_FEATURE_BYTES
    return min(_MAX_FEATURE_BYTES, free // 4), min(_MAX_TRAJECTORY_BYTES, free // 8)

_State = dict[int, dict[str, Tensor]]  # task index -> adapted suffix tensors (flagged ones only)


def _batchable(plan: AdaptationPlan) -> bool:
    """Whether tasks can be stacked through the suffix: no batch norm updating running statistics."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
                   for m in plan.suffix.module.modules())


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
        batch_tasks: Adapt the tasks of a call together (``vmap``) instead of
            one at a time.
    """

    def __init__(
        self,
        model: nn.Module,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        inner_lr: float,
        *,
        feature_bytes: int = _MAX_FEATURE_BYTES,
        trajectory_bytes: int = _MAX_TRAJECTORY_BYTES,
        batch_tasks: bool = False,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks to score")
        self.model, self.benchmark, self.tasks, self.inner_lr = model, benchmark, list(tasks), inner_lr
        self.batch_tasks = batch_tasks
        layout = _layout if not batch_tasks else (lambda t: t)  # vmap cannot convolve channels-last tensors
        self.feature_bytes, self.trajectory_bytes = feature_bytes, trajectory_bytes
        self._num_stages = len(model_stages(model))
        self._features: dict[int, dict[int, tuple[Tensor, Tensor]]] = {
            0: {i: (layout(t.x_support), layout(t.x_query)) for i, t in enumerate(self.tasks)}
        }
        self._cached_bytes = 0  # prefix features beyond the inputs
        self.features_computed = 0  # task-boundary feature computations, for tests and benchmarks
        self._trajectories: OrderedDict[tuple[tuple[bool, ...], int], _State] = OrderedDict()
        self._trajectory_sizes: dict[tuple[tuple[bool, ...], int], int] = {}
        self._params = {name: layout(p.detach()) for name, p in model.named_parameters()}
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
        starts = {i: self._resume_point(pattern, i) for i in indices}
        features = dict(zip(indices, self.features(plan.cut, indices), strict=True))
        if self.batch_tasks and _batchable(plan):
            outputs, adapted_all = self._adapt_batched(plan, suffix, pattern, starts, features)
        else:
            outputs, adapted_all = self._adapt_each(plan, suffix, pattern, starts, features)
        scores = []
        for i in indices:
            if not torch.isfinite(outputs[i]).all():
                raise FloatingPointError(f"pattern {pattern} gave non-finite outputs; is the inner learning rate "
                                         "too high?")
            scores.append(score_fn(outputs[i], self.tasks[i].y_query))
            self.steps_run += pattern.steps - starts[i][0]
        if adapted_all:
            self._store(pattern, plan, adapted_all)
        return np.array(scores)

    def _adapt_each(self, plan: AdaptationPlan, suffix: dict[str, Tensor], pattern: Pattern,
                    starts: dict[int, tuple[int, dict[str, Tensor] | None]],
                    features: dict[int, tuple[Tensor, Tensor]]) -> tuple[dict[int, Tensor], _State]:
        """One task at a time: query outputs, and the adapted suffix of every task that took steps."""
        outputs, adapted_all = {}, {}
        for i, (done, state) in starts.items():
            support, query = features[i]
            start = {**suffix, **state} if state is not None else suffix
            adapted = run_suffix_steps(plan, start, support, self.tasks[i].y_support, pattern.steps - done,
                                       self.inner_lr, self.benchmark.loss_fn, check_finite=False)
            with torch.no_grad():
                outputs[i] = plan.suffix(adapted, query)
            if pattern.steps > done:
                adapted_all[i] = adapted
        return outputs, adapted_all

    def _adapt_batched(self, plan: AdaptationPlan, suffix: dict[str, Tensor], pattern: Pattern,
                       starts: dict[int, tuple[int, dict[str, Tensor] | None]],
                       features: dict[int, tuple[Tensor, Tensor]]) -> tuple[dict[int, Tensor], _State]:
        """All tasks that resume from the same step at once (``torch.func.vmap`` over tasks): the GPU path.

        The same operations as :meth:`_adapt_each` on stacked tensors, so the
        results agree within float rounding.
        """
        local_of = {name: local for local, name in plan.suffix.param_names}
        flagged = [local_of[name] for name in plan.flagged]
        shared = {k: v for k, v in suffix.items() if k not in flagged}
        module, loss_fn, lr = plan.suffix.module, self.benchmark.loss_fn, self.inner_lr

        def forward(fast: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(module, {**shared, **fast}, (x,))

        def loss(fast: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return loss_fn(forward(fast, x), y)

        step = torch.func.vmap(torch.func.grad(loss), randomness="different")
        query = torch.func.vmap(forward, randomness="different")
        outputs, adapted_all = {}, {}
        for done in sorted({done for done, _ in starts.values()}):
            group = [i for i, (d, _) in starts.items() if d == done]
            states = [starts[i][1] or suffix for i in group]
            fast = {k: torch.stack([state[k] for state in states]) for k in flagged}
            support = torch.stack([features[i][0] for i in group])
            targets = torch.stack([self.tasks[i].y_support for i in group])
            with torch.enable_grad():
                for _ in range(pattern.steps - done):
                    grads = step(fast, support, targets)
                    fast = {k: (fast[k] - lr * grads[k]).detach() for k in flagged}
            with torch.no_grad():
                batch = query(fast, torch.stack([features[i][1] for i in group]))
            for position, i in enumerate(group):
                outputs[i] = batch[position]
                if pattern.steps > done:
                    adapted_all[i] = {**suffix, **{k: fast[k][position] for k in flagged}}
        return outputs, adapted_all


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
        feature_bytes: Memory budget for cached prefix features (all shards;
            default from :func:`memory_budgets`).
        trajectory_bytes: Memory budget for stored adaptation states (all
            shards; default from :func:`memory_budgets`).
        batch_tasks: Adapt the tasks of a call together with
            ``torch.func.vmap`` (default: on CUDA, where one kernel over many
            tasks keeps the GPU busy; on the CPU, threads over task shards
            are faster). Models whose batch norm updates running statistics
            in training mode are adapted one task at a time.
    """

    def __init__(
        self,
        model: nn.Module,
        benchmark: Benchmark,
        tasks: Sequence[Task],
        inner_lr: float,
        *,
        threads: int | None = None,
        feature_bytes: int | None = None,
        trajectory_bytes: int | None = None,
        batch_tasks: bool | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks to score")
        device = tasks[0].x_support.device
        default_features, default_trajectories = memory_budgets(device)
        feature_bytes = default_features if feature_bytes is None else feature_bytes
        trajectory_bytes = default_trajectories if trajectory_bytes is None else trajectory_bytes
        count = max(1, min(threads or default_threads(device), len(tasks)))
        bounds = np.linspace(0, len(tasks), count + 1).astype(int)
        self._pool: ThreadPoolExecutor | None = None
        self._shards = [
            _ShardScorer(model if i == 0 else copy.deepcopy(model), benchmark, tasks[a:b], inner_lr,
                         batch_tasks=device.type == "cuda" if batch_tasks is None else batch_tasks,
                         feature_bytes=feature_bytes // count, trajectory_bytes=trajectory_bytes // count)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]

    def __len__(self) -> int:
        return sum(len(shard) for shard in self._shards)

    @property
    def steps_run(self) -> int:
        """Inner steps actually computed, summed over tasks."""
        return sum(shard.steps_run for shard in self._shards)

    @contextlib.contextmanager
    def threads(self) -> Iterator[ThreadPoolExecutor]:
        """The scoring threads, alive for the outermost ``with`` block (a trial, or one scoring call).

        Starting threads costs: a new thread's first convolutions pay PyTorch's per-thread set-up, about
        20% of a study's time when every scoring call started its own. So a trial opens one block around
        all its calls; when it ends, normally or with an exception from any shard (the pool waits for the
        others), the threads end too. Each computes on one core; the count is set inside each worker,
        since PyTorch's thread count is per calling thread, and workers left at the default keep idle
        thread teams that halve the speed of the main thread's later work.
        """
        if self._pool is not None:
            yield self._pool
            return
        with ThreadPoolExecutor(len(self._shards), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            self._pool = pool
            try:
                yield pool
            finally:
                self._pool = None

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
            with self.threads() as pool:
                parts = list(pool.map(lambda job: job[0].scores(pattern, job[1]), jobs))
        result = np.empty(indices.size)
        for (_, _, positions), part in zip(jobs, parts, strict=True):
            result[positions] = part
        return result


def score_pattern(
    model: nn.Module, benchmark: Benchmark, tasks: Sequence[Task], pattern: Pattern, inner_lr: float
) -> np.ndarray:
    """Per-task query scores (accuracy, or -MSE) of ``pattern`` on ``tasks``, in task order.

    The one-off form of :class:`CachedScorer` (the same code path), for
    callers that score one pattern once.

    Raises:
        FloatingPointError: If adaptation diverges (NaN or infinite outputs).
    """
    return CachedScorer(model, benchmark, tasks, inner_lr).scores(pattern)
