"""Fast query scores of many patterns on one fixed task set.

A search scores hundreds of patterns on the same validation tasks, and much of
that work is shared between patterns:

* **prefix features**: the tasks' features at each stage boundary depend only
  on the meta-trained weights, so they are computed once per task set (support
  and query, batch statistics per task) and reused by every pattern whose
  frozen prefix ends at that boundary;
* **trajectories**: a pattern whose first steps are another pattern follows
  its SGD trajectory, so ``F:7`` continues from the stored state of ``F:4``,
  and ``11111:1+00011:4`` from that of ``11111:1``, instead of starting over.

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..adaptation import (
    AdaptationPlan,
    StagePart,
    adaptation_plan,
    channels_last,
    copied_buffers,
    model_stages,
    part_tensors,
    run_phases,
    stage_part,
    updates_running_statistics,
)
from ..benchmarks import Benchmark, Task
from ..errors import AdaptationDiverged
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

_State = dict[str, Tensor]  # one task's adapted parameters by model name (those the pattern flags)


def _batchable(plan: AdaptationPlan) -> bool:
    """Whether tasks can be stacked through the suffix: no batch norm updating running statistics."""
    return not updates_running_statistics(plan.suffix.module)


def _bytes(tensors: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _layout(tensor: Tensor) -> Tensor:
    """Channels-last for 4-D tensors on the CPU (faster oneDNN convolutions, see :func:`channels_last`)."""
    return channels_last(tensor) if tensor.dim() == 4 and tensor.device.type == "cpu" else tensor


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
        self._trajectories: OrderedDict[Pattern, dict[int, _State]] = OrderedDict()  # by canonical pattern
        self._trajectory_sizes: dict[Pattern, int] = {}
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

    def _resume_points(self, pattern: Pattern, indices: Sequence[int]) -> dict[int, tuple[int, _State | None]]:
        """Per task: the stored state with the most steps that ``pattern`` continues (its own first steps).

        A stored pattern is a start for ``pattern`` when it equals ``pattern``
        truncated to its step count: same phases, flags and scales so far.
        """
        usable = sorted((key for key in self._trajectories
                         if key.steps <= pattern.steps and pattern.truncated(key.steps) == key),
                        key=lambda key: key.steps, reverse=True)
        starts: dict[int, tuple[int, _State | None]] = {}
        for i in indices:
            key = next((key for key in usable if i in self._trajectories[key]), None)
            starts[i] = (0, None) if key is None else (key.steps, self._trajectories[key][i])
        for key in usable:
            self._trajectories.move_to_end(key)
        return starts

    def _store(self, pattern: Pattern, adapted: dict[int, _State]) -> None:
        key = pattern.canonical()
        state = self._trajectories.setdefault(key, {})
        state.update(adapted)
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
        starts = self._resume_points(pattern, indices)
        features = dict(zip(indices, self.features(plan.cut, indices), strict=True))
        adapt_tasks = self._adapt_batched if self.batch_tasks and _batchable(plan) else self._adapt_each
        outputs, adapted_all = adapt_tasks(plan, pattern, starts, features, copied_buffers(self.model))
        scores = np.array([score_fn(outputs[i], self.tasks[i].y_query) if torch.isfinite(outputs[i]).all()
                           else np.nan for i in indices], dtype=np.float64)
        diverged = int((~np.isfinite(scores)).sum())  # outputs so large that a regression error overflows count too
        if diverged:
            raise _diverged(pattern, diverged, len(indices))
        self.steps_run += sum(pattern.steps - starts[i][0] for i in indices)
        if adapted_all:
            self._store(pattern, adapted_all)
        return scores

    def _adapt_each(self, plan: AdaptationPlan, pattern: Pattern, starts: dict[int, tuple[int, _State | None]],
                    features: dict[int, tuple[Tensor, Tensor]],
                    buffers: dict[str, Tensor]) -> tuple[dict[int, Tensor], dict[int, _State]]:
        """One task at a time: query outputs, and the adapted parameters of every task that took steps."""
        outputs, adapted_all = {}, {}
        for i, (done, state) in starts.items():
            support, query = features[i]
            adapted = run_phases(self.model, pattern.remaining(done), {**self._params, **(state or {})}, buffers,
                                 support, plan.cut, self.tasks[i].y_support, self.inner_lr, self.benchmark.loss_fn,
                                 check_finite=False)
            with torch.no_grad():
                outputs[i] = plan.suffix(part_tensors(plan.suffix, adapted, buffers), query)
            if pattern.steps > done:
                adapted_all[i] = {name: adapted[name] for name in plan.flagged}
        return outputs, adapted_all

    def _adapt_batched(self, plan: AdaptationPlan, pattern: Pattern, starts: dict[int, tuple[int, _State | None]],
                       features: dict[int, tuple[Tensor, Tensor]],
                       buffers: dict[str, Tensor]) -> tuple[dict[int, Tensor], dict[int, _State]]:
        """All tasks that resume from the same step at once (``torch.func.vmap`` over tasks): the GPU path.

        The same operations as :meth:`_adapt_each` on stacked tensors (per
        phase: the stages it freezes once, then its steps), so the results
        agree within float rounding.
        """
        loss_fn, shared = self.benchmark.loss_fn, self._params

        def function(part: StagePart) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
            def forward(batched: dict[str, Tensor], x: Tensor) -> Tensor:
                return functional_call(part.module, part_tensors(part, {**shared, **batched}, buffers), (x,))
            return forward

        outputs, adapted_all = {}, {}
        for done in sorted({done for done, _ in starts.values()}):
            group = [i for i, (d, _) in starts.items() if d == done]
            states = [starts[i][1] or {} for i in group]
            batched = {name: torch.stack([state.get(name, shared[name]) for state in states]) for name in plan.flagged}
            support = torch.stack([features[i][0] for i in group])
            targets = torch.stack([self.tasks[i].y_support for i in group])
            for phase in pattern.remaining(done):
                phase_plan = adaptation_plan(self.model, phase.flags)
                phase_support = support
                if phase_plan.cut > plan.cut:
                    middle = function(stage_part(self.model, plan.cut, phase_plan.cut))
                    with torch.no_grad():
                        phase_support = torch.func.vmap(middle, randomness="different")(batched, support)
                forward = function(phase_plan.suffix)

                def loss(fast: dict[str, Tensor], rest: dict[str, Tensor], x: Tensor, y: Tensor,
                         forward: Callable[[dict[str, Tensor], Tensor], Tensor] = forward) -> Tensor:
                    return loss_fn(forward({**rest, **fast}, x), y)

                step = torch.func.vmap(torch.func.grad(loss), randomness="different")
                lr = self.inner_lr * phase.scale
                with torch.enable_grad():
                    for _ in range(phase.steps):
                        fast = {name: batched[name] for name in phase_plan.flagged}
                        rest = {name: t for name, t in batched.items() if name not in fast}
                        grads = step(fast, rest, phase_support, targets)
                        batched.update({name: (fast[name] - lr * grads[name]).detach() for name in fast})
            with torch.no_grad():
                batch = torch.func.vmap(function(plan.suffix), randomness="different")(
                    batched, torch.stack([features[i][1] for i in group]))
            for position, i in enumerate(group):
                outputs[i] = batch[position]
                if pattern.steps > done:
                    adapted_all[i] = {name: batched[name][position] for name in plan.flagged}
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
            AdaptationDiverged: If adaptation diverges on some tasks (how many, over every shard).
        """
        indices = np.arange(len(self)) if tasks is None else np.asarray(tasks, dtype=int)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"task indices must lie in [0, {len(self)})")
        starts = np.cumsum([0] + [len(shard) for shard in self._shards])
        owner = np.searchsorted(starts, indices, side="right") - 1
        jobs = [(shard, indices[owner == i] - starts[i], owner == i) for i, shard in enumerate(self._shards)
                if (owner == i).any()]
        def run(job: tuple[_ShardScorer, np.ndarray, np.ndarray]) -> np.ndarray | AdaptationDiverged:
            try:
                return job[0].scores(pattern, job[1])
            except AdaptationDiverged as error:  # counted over every shard below
                return error

        if len(jobs) == 1:
            parts = [run(job) for job in jobs]
        else:
            with self.threads() as pool:
                parts = list(pool.map(run, jobs))
        failures = [part for part in parts if isinstance(part, AdaptationDiverged)]
        if failures:
            diverged = sum(f.diverged for f in failures)
            raise _diverged(pattern, diverged, int(indices.size))
        result = np.empty(indices.size)
        for (_, _, positions), part in zip(jobs, parts, strict=True):
            result[positions] = part
        return result


def _diverged(pattern: Pattern, diverged: int, tasks: int) -> AdaptationDiverged:
    return AdaptationDiverged(f"pattern {pattern} diverged (non-finite outputs or scores) on {diverged} of {tasks} "
                              "tasks; is the inner learning rate (times the phase's scale) too high?",
                              diverged=diverged, tasks=tasks)


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
