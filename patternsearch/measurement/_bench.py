"""``patternsearch bench``: adaptation latency of patterns against full MAML, in one process.

All variants run interleaved on the same tasks after a warm-up, so the ratios
are robust to a shared machine's drift. Besides the requested patterns the
benchmark always times

* ``full``: the baseline (every group, the checkpoint's evaluation steps);
* ``plain-loop``: the plain PyTorch MAML loop (``torch.autograd.grad`` over all
  parameters, then SGD, per step) at the baseline's step count, which the
  fast full-MAML path must not be slower than;
* ``full@S``: full MAML at each requested pattern's own step count ``S``.

Every variant is timed in the same rounds adapting (the time every speedup is
made of, and the one the search optimises) and adapting then predicting the
task's query batch (what a deployment waits for), each two ways: **eager**
(``adapt`` + ``functional_forward``, as a user calls them) and **deployed**
(its :class:`~patternsearch.deployment.DeployedAdapter`: best layout,
compiled where it pays). The plain loop runs as users run it today: tensors
as given (NCHW), eager.

Files written by ``patternsearch export`` can be timed beside them (``export
FILE`` rows): they adapt and predict in one call, so only their adapt +
predict time is measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..adaptation import Params, functional_forward
from ..benchmarks import Task
from ..deployment import exported_pattern, load_export
from ..devices import device_name
from ..errors import UsageError, one_line
from ..experiment import Experiment
from ..pattern import Pattern
from ..reference import reference_adapt
from ._flops import adaptation_flops
from ._precision import environment
from ._scoring import CachedScorer
from ._timing import (
    LatencyStats,
    adaptation_call,
    deployed_adapter,
    deployed_calls,
    interleaved_latencies,
    with_prediction,
)

BASELINE, REFERENCE, PREDICT, DEPLOYED, EXPORT = "full", "plain-loop", "+predict", "@deployed", "export "
PLAIN_PATH = "plain PyTorch loop: tensors as given, eager"


@dataclass(frozen=True)
class BenchRow:
    """One timed variant.

    Attributes:
        name: ``full``, ``plain-loop``, ``full@S``, the pattern as given, or
            ``export FILE`` for a file ``patternsearch export`` wrote.
        pattern: Explicit ``FLAGS:STEPS`` (``-`` for an export that does not say).
        latency_ms: Median adaptation latency of one task (None for an
            export: it adapts and predicts in one call).
        latency_iqr_ms: Inter-quartile range (None for an export).
        speedup: Over full MAML, from paired samples
            (:meth:`~patternsearch.measurement.LatencyStats.speedup_over`),
            as in a study (None for an export).
        speedup_same_steps: The same over full MAML at this pattern's step
            count (None for the reference rows).
        adapt_predict_ms: Median time to adapt and then predict the task's
            query batch.
        adapt_predict_speedup: Full MAML's adapt + predict time over this
            one's, from paired samples.
        deployed_latency_ms: Median adaptation latency on the deployed
            adapter (None for the plain loop).
        deployed_speedup: Deployed full MAML's adaptation time over this
            one's deployed, paired.
        deployed_adapt_predict_ms: Median adapt + predict time, deployed.
        deployed_adapt_predict_speedup: Deployed full MAML's adapt + predict
            time over this one's deployed, paired.
        plain_loop_speedup: The plain loop's adapt + predict time over this
            one's deployed, paired: how much faster than what users run today.
        path: What the deployed times ran (or the plain loop's path).
        query_batch: Query examples predicted per task.
        accuracy: Mean query score on the timed tasks (the same scorer as
            every other command; few tasks, so only a sanity check).
        tasks: Number of timed tasks.
        flops: FLOPs of one adaptation (None for an export).
        device: Where it ran.
        threads: CPU threads PyTorch used.
        environment: PyTorch version and precision settings.
    """

    name: str
    pattern: str
    latency_ms: float | None
    latency_iqr_ms: float | None
    speedup: float | None
    speedup_same_steps: float | None
    adapt_predict_ms: float
    adapt_predict_speedup: float
    query_batch: int
    deployed_latency_ms: float | None
    deployed_speedup: float | None
    deployed_adapt_predict_ms: float | None
    deployed_adapt_predict_speedup: float | None
    plain_loop_speedup: float | None
    path: str
    accuracy: float
    tasks: int
    flops: int | None
    device: str
    threads: int
    environment: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def bench(
    experiment: Experiment,
    patterns: Sequence[Pattern],
    tasks: Sequence[Task],
    *,
    repeats: int = 10,
    warmup: int = 2,
    compiled: bool | None = None,
    exports: Sequence[str | os.PathLike[str]] = (),
) -> list[BenchRow]:
    """Times the patterns, full MAML and the plain loop, interleaved, adapting and adapting then predicting.

    Args:
        experiment: Model, benchmark and checkpoint (tasks on its device).
        patterns: Patterns to time.
        tasks: Tasks adapted to in every round.
        repeats: Timed rounds.
        warmup: Untimed rounds first.
        compiled: The deployed adapters' compilation (None: where it pays).
        exports: Files ``patternsearch export`` wrote, timed adapting and
            predicting in the same rounds.

    Returns:
        ``full``, ``plain-loop``, then each pattern (and each ``full@S``), then each export.

    Raises:
        UsageError: An export that cannot be read or does not take these tasks' shapes.
    """
    model, lr, loss_fn = experiment.model, experiment.inner_lr, experiment.benchmark.loss_fn
    full = experiment.full

    def fast(pattern: Pattern) -> Callable[[Task], Params]:
        return adaptation_call(model, pattern, lr, loss_fn)

    variants: dict[str, tuple[Pattern, Callable[[Task], Params]]] = {
        BASELINE: (full, fast(full)),
        REFERENCE: (full, lambda task: reference_adapt(model, task.x_support, task.y_support, full, lr, loss_fn,
                                                       layout=False)),
    }
    same_steps: dict[str, str] = {}
    for pattern in patterns:
        if pattern == full:
            continue
        name = str(pattern)
        variants.setdefault(name, (pattern, fast(pattern)))
        full_at = Pattern.full(pattern.num_groups, pattern.steps)
        same_name = BASELINE if full_at == full else f"full@{pattern.steps}"
        variants.setdefault(same_name, (full_at, fast(full_at)))
        same_steps[name] = same_name
    timed = {name: fn for name, (_, fn) in variants.items()}
    timed.update({name + PREDICT: with_prediction(model, fn) for name, (_, fn) in variants.items()
                  if name != REFERENCE})
    timed[REFERENCE + PREDICT] = lambda task: functional_forward(
        model, reference_adapt(model, task.x_support, task.y_support, full, lr, loss_fn, layout=False), task.x_query,
        layout=False)
    paths = {REFERENCE: PLAIN_PATH}
    for name, (pattern, _) in variants.items():
        if name != REFERENCE:
            adapter = deployed_adapter(model, pattern, lr, loss_fn, tasks[0], compiled=compiled)
            timed[name + DEPLOYED], timed[name + DEPLOYED + PREDICT] = deployed_calls(adapter)
            paths[name] = adapter.path.describe()
    adapters = {EXPORT + Path(path).name: _fitting_export(path, tasks[0]) for path in exports}
    timed.update({name: lambda task, a=adapter: a(task.x_support, task.y_support, task.x_query)
                  for name, (adapter, _) in adapters.items()})
    stats = interleaved_latencies(timed, tasks, experiment.device, repeats=repeats, warmup=warmup)
    scorer = CachedScorer(model, experiment.benchmark, tasks, lr)
    accuracy = {name: float(scorer.scores(pattern).mean()) for name, (pattern, _) in variants.items()}
    rows = []
    for name, (pattern, _) in variants.items():
        reference = same_steps.get(name)
        rows.append(BenchRow(
            name=name, pattern=str(pattern), latency_ms=stats[name].median_ms, latency_iqr_ms=stats[name].spread_ms,
            speedup=stats[name].speedup_over(stats[BASELINE]),
            speedup_same_steps=stats[name].speedup_over(stats[reference]) if reference else None,
            adapt_predict_ms=stats[name + PREDICT].median_ms,
            adapt_predict_speedup=stats[name + PREDICT].speedup_over(stats[BASELINE + PREDICT]),
            query_batch=int(tasks[0].x_query.shape[0]),
            **_deployed(stats, name), path=paths[name],
            accuracy=accuracy[name], tasks=len(tasks),
            flops=adaptation_flops(model, tasks[0], pattern, lr, loss_fn),
            device=device_name(experiment.device), threads=torch.get_num_threads(), environment=environment(),
        ))
    score = experiment.benchmark.score_fn
    for name, (adapter, pattern_text) in adapters.items():
        with torch.no_grad():
            scores = [score(adapter(t.x_support, t.y_support, t.x_query), t.y_query) for t in tasks]
        rows.append(BenchRow(
            name=name, pattern=pattern_text, latency_ms=None, latency_iqr_ms=None, speedup=None,
            speedup_same_steps=None, adapt_predict_ms=stats[name].median_ms,
            adapt_predict_speedup=stats[name].speedup_over(stats[BASELINE + PREDICT]),
            query_batch=int(tasks[0].x_query.shape[0]), deployed_latency_ms=None, deployed_speedup=None,
            deployed_adapt_predict_ms=stats[name].median_ms,
            deployed_adapt_predict_speedup=stats[name].speedup_over(stats[BASELINE + DEPLOYED + PREDICT]),
            plain_loop_speedup=stats[name].speedup_over(stats[REFERENCE + PREDICT]),
            path=f"exported file (adapt + predict in one call, pattern {pattern_text})",
            accuracy=float(sum(scores) / len(scores)), tasks=len(tasks),
            flops=None, device=device_name(experiment.device), threads=torch.get_num_threads(),
            environment=environment(),
        ))
    return rows


def _fitting_export(path: str | os.PathLike[str], task: Task) -> tuple[Callable[..., torch.Tensor], str]:
    """The adapter in ``path`` and its pattern, after one call on ``task`` (an export for other shapes: one line)."""
    pattern = exported_pattern(path) or "-"
    adapter = load_export(path)
    try:
        with torch.no_grad():
            adapter(task.x_support, task.y_support, task.x_query)
    except Exception as error:  # the loaded program's guard, or the compiled package's input check
        raise UsageError(f"export {path} does not take these tasks ({one_line(error)}); export it for them, "
                         "or bench it with the ways, shots and queries it was exported for") from None
    return adapter, pattern


def _deployed(stats: dict[str, LatencyStats], name: str) -> dict[str, float | None]:
    """A row's deployed times and ratios (None for the plain loop, which has no deployed form)."""
    if name == REFERENCE:
        return dict.fromkeys(("deployed_latency_ms", "deployed_speedup", "deployed_adapt_predict_ms",
                              "deployed_adapt_predict_speedup", "plain_loop_speedup"))
    adapting, both = stats[name + DEPLOYED], stats[name + DEPLOYED + PREDICT]
    return {"deployed_latency_ms": adapting.median_ms,
            "deployed_speedup": adapting.speedup_over(stats[BASELINE + DEPLOYED]),
            "deployed_adapt_predict_ms": both.median_ms,
            "deployed_adapt_predict_speedup": both.speedup_over(stats[BASELINE + DEPLOYED + PREDICT]),
            "plain_loop_speedup": both.speedup_over(stats[REFERENCE + PREDICT])}
