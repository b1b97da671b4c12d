"""Measures one pattern for a study: paired accuracy on fixed tasks, latency next to the baseline, FLOPs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._version import __version__
from ..adaptation import Params
from ..benchmarks import Task
from ..devices import device_name
from ..experiment import Experiment
from ..pattern import Pattern
from ..uncertainty import TaskDesign, estimate
from ._flops import adaptation_flops
from ._precision import environment
from ._racing import Rival, race
from ._scoring import CachedScorer
from ._timing import adaptation_call, interleaved_latencies, speedup_of


@dataclass(frozen=True)
class Measurement:
    """One pattern's numbers, as stored in a trial's user attributes.

    Attributes:
        pattern: ``FLAGS:STEPS``.
        accuracy: Mean query score over the tasks scored.
        ci95: Its 95% confidence half-width (shared classes accounted for).
        classes: Distinct classes the scored tasks drew (None without classes).
        units: Distinct independent units among them (Omniglot: characters).
        scores: Per-task scores (for paired comparisons), in task order.
        tasks_scored: How many of the fixed tasks were scored.
        scored_tasks: Their indices when scoring stopped early, else None.
        dominated_by: The faster trial that was surely more accurate, when
            scoring stopped early.
        latency_ms: Median adaptation latency of one task.
        latency_iqr_ms: Inter-quartile range of the latency samples.
        baseline_latency_ms: The baseline's median, measured interleaved
            with this pattern on the same worker.
        latency_ratio: Median of the paired latency ratios to the baseline
            (:meth:`LatencyStats.ratio_to`).
        speedup: ``1 / latency_ratio``: how many times faster than the
            baseline the pattern adapts (:meth:`LatencyStats.speedup_over`).
        flops: FLOPs of one adaptation.
        device: Where it was measured.
        version: patternsearch version.
        environment: PyTorch version and precision settings it ran under.
    """

    pattern: str
    accuracy: float
    ci95: float
    scores: list[float]
    tasks_scored: int
    latency_ms: float
    latency_iqr_ms: float
    baseline_latency_ms: float
    latency_ratio: float
    speedup: float
    flops: int
    device: str
    classes: int | None = None
    units: int | None = None
    scored_tasks: list[int] | None = None
    dominated_by: int | None = None
    version: str = ""
    environment: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Measurement:
        """The measurement a trial stored with :meth:`user_attrs` (other attributes are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in attrs.items() if key in known})

    def time_objective(self, metric: str) -> float:
        """The value the study minimises for ``metric`` (ratio, latency or flops)."""
        return time_objective(metric, self.latency_ms, self.latency_ratio, self.flops)

    def user_attrs(self) -> dict[str, object]:
        """JSON-ready attributes."""
        return asdict(self)


def time_objective(metric: str, latency_ms: float, latency_ratio: float, flops: int) -> float:
    """The value a study minimises for ``metric`` (ratio, latency or flops)."""
    return {"ratio": latency_ratio, "latency": latency_ms, "flops": float(flops)}[metric]


@dataclass(frozen=True)
class Timing:
    """A pattern's latency measured interleaved with the baseline's.

    Attributes:
        latency_ms: The pattern's median (ms).
        spread_ms: Inter-quartile range of its samples.
        baseline_ms: The baseline's median.
        ratio: Median over paired samples (same task, same round, run back
            to back) of pattern / baseline. A burst of load on a shared
            machine slows both samples of a pair, so it cancels in the ratio
            when it would skew a ratio of medians.
    """

    latency_ms: float
    spread_ms: float
    baseline_ms: float
    ratio: float


class PatternEvaluator:
    """Evaluates patterns of one experiment on one fixed task set.

    Args:
        experiment: Model, benchmark and checkpoint.
        baseline: The reference pattern, timed next to every pattern.
        tasks: Fixed tasks (on the experiment's device); every pattern is
            scored on all of them, so accuracy differences are paired.
        latency_tasks: How many of the tasks are timed.
        repeats: Timed rounds per task (after one warm-up round).
    """

    def __init__(
        self,
        experiment: Experiment,
        baseline: Pattern,
        tasks: Sequence[Task],
        *,
        latency_tasks: int = 2,
        repeats: int = 3,
    ) -> None:
        self.experiment, self.baseline = experiment, baseline
        self.scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
        self.design = TaskDesign.of(tasks)
        self.timed_tasks = list(tasks[:latency_tasks])
        self.repeats = repeats
        self.device_name = device_name(experiment.device)

    def _adapter(self, pattern: Pattern) -> Callable[[Task], Params]:
        experiment = self.experiment
        return adaptation_call(experiment.model, pattern, experiment.inner_lr, experiment.benchmark.loss_fn)

    def latencies(self, pattern: Pattern) -> Timing:
        """``pattern``'s latency next to the baseline's, interleaved (see :class:`Timing`)."""
        variants = {"baseline": self._adapter(self.baseline)}
        if pattern != self.baseline:
            variants["pattern"] = self._adapter(pattern)
        stats = interleaved_latencies(variants, self.timed_tasks, self.experiment.device, repeats=self.repeats)
        mine, base = stats.get("pattern", stats["baseline"]), stats["baseline"]
        return Timing(mine.median_ms, mine.spread_ms, base.median_ms, mine.ratio_to(base))

    def measure(self, pattern: Pattern, rivals: Sequence[Rival] | None = None,
                time_metric: str = "ratio") -> Measurement:
        """Times and scores ``pattern``.

        Args:
            pattern: The pattern.
            rivals: Fully scored trials; scoring stops early once one at least
                as fast is surely more accurate (see :mod:`._racing`). None
                scores every task.
            time_metric: The study's time metric, to compare with the rivals.

        Raises:
            FloatingPointError: If adaptation diverges.
        """
        timing = self.latencies(pattern)
        experiment = self.experiment
        flops = adaptation_flops(experiment.model, self.timed_tasks[0], pattern, experiment.inner_lr,
                                 experiment.benchmark.loss_fn)
        mine = time_objective(time_metric, timing.latency_ms, timing.ratio, flops)
        faster = [rival for rival in rivals or () if rival.time <= mine]
        with self.scorer.threads():  # one set of scoring threads for the whole trial
            outcome = race(lambda tasks: self.scorer.scores(pattern, tasks), len(self.scorer), faster)
        accuracy = estimate(outcome.scores, self.design.subset(outcome.tasks))
        stopped = outcome.dominated_by is not None
        return Measurement(
            pattern=str(pattern.canonical()),
            accuracy=accuracy.mean,
            ci95=accuracy.ci95,
            classes=accuracy.classes,
            units=accuracy.units,
            scores=[round(float(s), 6) for s in outcome.scores],
            tasks_scored=int(outcome.tasks.size),
            scored_tasks=[int(i) for i in outcome.tasks] if stopped else None,
            dominated_by=outcome.dominated_by,
            latency_ms=timing.latency_ms,
            latency_iqr_ms=timing.spread_ms,
            baseline_latency_ms=timing.baseline_ms,
            latency_ratio=timing.ratio,
            speedup=speedup_of(timing.ratio),
            flops=flops,
            device=self.device_name,
            version=__version__,
            environment=environment(),
        )
