"""Measures one pattern for a study: paired accuracy on fixed tasks, latency next to the baseline, FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .. import __version__
from ..adaptation import adapt
from ..benchmarks import Task
from ..cached_scoring import CachedScorer
from ..devices import device_name
from ..experiment import Experiment
from ..flops import adaptation_flops
from ..pattern import Pattern
from ..scoring import mean_ci95
from ..timing import interleaved_latencies


@dataclass(frozen=True)
class Measurement:
    """One pattern's numbers, as stored in a trial's user attributes.

    Attributes:
        pattern: ``FLAGS:STEPS``.
        accuracy: Mean query score over the fixed tasks.
        ci95: Its 95% confidence half-width.
        scores: Per-task scores (for paired comparisons).
        latency_ms: Median adaptation latency of one task.
        latency_iqr_ms: Inter-quartile range of the latency samples.
        baseline_latency_ms: The baseline's median, measured interleaved
            with this pattern on the same worker.
        latency_ratio: ``latency_ms / baseline_latency_ms``.
        speedup: ``baseline_latency_ms / latency_ms``.
        flops: FLOPs of one adaptation.
        device: Where it was measured.
        version: patternsearch version.
    """

    pattern: str
    accuracy: float
    ci95: float
    scores: list[float]
    latency_ms: float
    latency_iqr_ms: float
    baseline_latency_ms: float
    latency_ratio: float
    speedup: float
    flops: int
    device: str
    version: str

    def time_objective(self, metric: str) -> float:
        """The value the study minimises for ``metric`` (ratio, latency or flops)."""
        return {"ratio": self.latency_ratio, "latency": self.latency_ms, "flops": float(self.flops)}[metric]

    def user_attrs(self) -> dict[str, object]:
        """JSON-ready attributes."""
        return asdict(self)


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
        self.timed_tasks = list(tasks[:latency_tasks])
        self.repeats = repeats
        self.device_name = device_name(experiment.device)

    def _adapter(self, pattern: Pattern):  # type: ignore[no-untyped-def]
        experiment = self.experiment

        def run(task: Task) -> object:
            return adapt(experiment.model, task.x_support, task.y_support, pattern, experiment.inner_lr,
                         experiment.benchmark.loss_fn)

        return run

    def latencies(self, pattern: Pattern) -> tuple[float, float, float]:
        """Median and IQR of ``pattern`` and the baseline's median (ms), interleaved."""
        variants = {"baseline": self._adapter(self.baseline)}
        if pattern != self.baseline:
            variants["pattern"] = self._adapter(pattern)
        stats = interleaved_latencies(variants, self.timed_tasks, self.experiment.device, repeats=self.repeats)
        mine = stats.get("pattern", stats["baseline"])
        return mine.median_ms, mine.spread_ms, stats["baseline"].median_ms

    def measure(self, pattern: Pattern) -> Measurement:
        """Scores and times ``pattern``.

        Raises:
            FloatingPointError: If adaptation diverges.
        """
        scores = self.scorer.scores(pattern)
        accuracy, ci95 = mean_ci95(scores)
        latency, spread, baseline_latency = self.latencies(pattern)
        experiment = self.experiment
        flops = adaptation_flops(experiment.model, self.timed_tasks[0], pattern, experiment.inner_lr,
                                 experiment.benchmark.loss_fn)
        return Measurement(
            pattern=str(pattern.canonical()),
            accuracy=accuracy,
            ci95=ci95,
            scores=[round(float(s), 6) for s in scores],
            latency_ms=latency,
            latency_iqr_ms=spread,
            baseline_latency_ms=baseline_latency,
            latency_ratio=latency / baseline_latency,
            speedup=baseline_latency / max(latency, 1e-9),
            flops=flops,
            device=self.device_name,
            version=__version__,
        )
