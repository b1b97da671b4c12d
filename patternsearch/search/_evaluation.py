"""``evaluate`` and ``bench``: patterns scored and timed against a baseline on the same tasks, as typed results.

Scores go through the one :class:`~patternsearch.measurement.CachedScorer`
every command uses, accuracies carry their class-aware intervals, and both
patterns are timed interleaved on the same model. A look at the test split
is recorded in the storage's ledger (:mod:`patternsearch.looks`): a later
confirmation on that split is refused unless accepted explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..checkpoint import file_checksum
from ..devices import device_name
from ..experiment import Experiment
from ..looks import Ledger
from ..measurement import (
    PLAIN_PATH,
    BenchRow,
    DeploymentTiming,
    adaptation_flops,
    bench,
    deployment_timing,
    environment,
)
from ..tables import optional, text_table
from ..uncertainty import Estimate, estimate
from ._paired import PairedScores
from ._storage import DEFAULT_STORAGE, open_storage


@dataclass(frozen=True)
class Evaluation:
    """A pattern against a baseline on the same tasks.

    Attributes:
        pattern, baseline: Their explicit texts.
        split: ``val`` or ``test``.
        metric: The benchmark's score (e.g. ``accuracy``).
        accuracy, baseline_accuracy, difference: Estimates with the tasks,
            classes and units they rest on (the difference is paired).
        timing: Adaptation and adapt + predict time of both, interleaved.
        flops: The pattern's adaptation FLOPs on one task.
        checkpoint, baseline_checkpoint: What each adapted.
        device: Where it ran.
    """

    pattern: str
    baseline: str
    split: str
    metric: str
    accuracy: Estimate
    baseline_accuracy: Estimate
    difference: Estimate
    timing: DeploymentTiming
    flops: int
    checkpoint: str
    baseline_checkpoint: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``evaluate --json`` prints)."""
        return {"pattern": self.pattern, "accuracy": self.accuracy.mean, "ci95": self.accuracy.ci95,
                "tasks": self.accuracy.tasks, "classes": self.accuracy.classes, "units": self.accuracy.units,
                "split": self.split, "metric": self.metric, "checkpoint": self.checkpoint,
                "baseline": self.baseline, "baseline_checkpoint": self.baseline_checkpoint,
                "baseline_accuracy": self.baseline_accuracy.mean, "baseline_ci95": self.baseline_accuracy.ci95,
                "difference": self.difference.mean, "difference_ci95": self.difference.ci95,
                **self.timing.as_dict(), "flops": self.flops, "device": self.device, "environment": environment()}

    def describe(self) -> str:
        """The lines ``evaluate`` prints."""
        baseline = self.baseline + ("" if self.baseline_checkpoint == self.checkpoint
                                    else f" on {self.baseline_checkpoint}")
        timing = self.timing
        return "\n".join([
            f"pattern {self.pattern} on {self.accuracy.tasks} {self.split} tasks ({self.device})",
            f"  {self.metric}: {self.accuracy.describe()}",
            f"  baseline {baseline}: {self.baseline_accuracy.describe()}",
            f"  paired difference: {self.difference.mean:+.4f} +/- {self.difference.ci95:.4f} (95% CI, same tasks)",
            f"  adaptation time: {timing.latency_ms:.2f} ms vs the baseline's {timing.baseline_latency_ms:.2f} ms: "
            f"speedup {timing.speedup:.1f}x (what the search optimises)",
            f"  adapt + predict {timing.query_batch} queries: {timing.adapt_predict_ms:.2f} ms vs "
            f"{timing.baseline_adapt_predict_ms:.2f} ms: {timing.adapt_predict_speedup:.1f}x end to end",
            f"  timed: {timing.path}; baseline {timing.baseline_path}",
            f"  adaptation FLOPs: {self.flops:,}",
        ])


def evaluate(
    experiment: Experiment,
    pattern: str = "full",
    *,
    baseline: str = "full",
    baseline_checkpoint: str | os.PathLike[str] | None = None,
    split: str = "val",
    tasks: int = 600,
    seed: int = 0,
    repeats: int = 5,
    storage: str = DEFAULT_STORAGE,
    advance: Callable[[int], None] | None = None,
) -> Evaluation:
    """Scores ``pattern`` and the baseline on the same tasks and times them (``patternsearch evaluate``).

    Args:
        experiment: Benchmark, checkpoint and model the pattern adapts.
        pattern: The pattern's text.
        baseline: The baseline's text, adapted on ``baseline_checkpoint`` (default: the same checkpoint).
        baseline_checkpoint: E.g. the parent of a specialized checkpoint.
        split: ``val`` (explore here) or ``test`` (recorded in ``storage``'s ledger of looks).
        tasks: Tasks scored.
        seed: Seed of the tasks.
        repeats: Interleaved timing rounds (on the first five tasks).
        storage: Where a look at the test split is recorded (opened before any scoring).
        advance: Called with the number of tasks scored as scoring goes (a progress bar).

    Raises:
        StorageError: ``split`` is ``test`` and the storage cannot be opened.
        AdaptationDiverged: The pattern or the baseline diverged.
    """
    ledger = Ledger(open_storage(storage)) if split == "test" else None
    reference = experiment.with_checkpoint(baseline_checkpoint)
    chosen, base = experiment.pattern(pattern), reference.pattern(baseline)
    drawn = experiment.tasks(split, tasks, seed)
    pair = PairedScores(experiment, reference, base, drawn)
    design = pair.design
    scores, baseline_scores = pair.candidate_scores(chosen, advance), pair.baseline_scores(advance)
    if ledger is not None:  # the numbers are about to be seen
        ledger.record_scoring("evaluate", experiment.benchmark,
                              [file_checksum(e.checkpoint_path) for e in (experiment, reference)], [chosen, base],
                              base, drawn, seed)
    # Time does not depend on the weights: both patterns are timed on the same model, interleaved.
    timing = deployment_timing(experiment.model, chosen, base, experiment.inner_lr, experiment.benchmark.loss_fn,
                               drawn[:5], experiment.device, repeats=repeats)
    return Evaluation(
        pattern=str(chosen.canonical()), baseline=str(base), split=split, metric=experiment.benchmark.metric,
        accuracy=estimate(scores, design), baseline_accuracy=estimate(baseline_scores, design),
        difference=estimate(scores - baseline_scores, design), timing=timing,
        flops=adaptation_flops(experiment.model, drawn[0], chosen, experiment.inner_lr, experiment.benchmark.loss_fn),
        checkpoint=str(experiment.checkpoint_path), baseline_checkpoint=str(reference.checkpoint_path),
        device=device_name(experiment.device))


@dataclass(frozen=True)
class BenchReport:
    """Patterns timed against full MAML and the plain PyTorch loop (``patternsearch bench``).

    Attributes:
        rows: One timed variant each (see :class:`~patternsearch.measurement.BenchRow`).
        tasks: Tasks per round.
        repeats: Timed rounds, interleaved.
    """

    rows: tuple[BenchRow, ...]
    tasks: int
    repeats: int

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-ready form (what ``bench --json`` prints): one object per variant."""
        return [row.as_dict() for row in self.rows]

    def describe(self) -> str:
        """The lines ``bench`` prints."""
        first = self.rows[0]
        head = (f"{first.device}, {first.threads} threads; {self.tasks} tasks x {self.repeats} rounds, interleaved; "
                f"adapt + predict predicts {first.query_batch} queries; eager: adapt + functional_forward; "
                f"deployed: DeployedAdapter; plain-loop: {PLAIN_PATH}")
        table = text_table(
            ["variant", "pattern", "adapt ms", "IQR ms", "speedup", "vs full@same steps", "deployed adapt ms",
             "deployed speedup", "adapt+predict ms", "deployed adapt+predict ms", "deployed adapt+predict speedup",
             "vs plain loop", "FLOPs", f"accuracy ({self.tasks} tasks)"],
            [(r.name, r.pattern, optional(r.latency_ms, ".3f"), optional(r.latency_iqr_ms, ".3f"), _ratio(r.speedup),
              _ratio(r.speedup_same_steps), optional(r.deployed_latency_ms, ".3f"), _ratio(r.deployed_speedup),
              f"{r.adapt_predict_ms:.3f}", optional(r.deployed_adapt_predict_ms, ".3f"),
              _ratio(r.deployed_adapt_predict_speedup), _ratio(r.plain_loop_speedup), optional(r.flops, ".3g"),
              f"{r.accuracy:.4f}") for r in self.rows])
        paths = sorted({r.path for r in self.rows if r.path != PLAIN_PATH})
        return "\n".join([head, table, *(f"  {path}" for path in paths)])


def _ratio(value: float | None) -> str:
    return optional(value, ".2f") + ("" if value is None else "x")


def bench_patterns(
    experiment: Experiment,
    patterns: Sequence[str],
    *,
    split: str = "val",
    tasks: int = 5,
    seed: int = 0,
    repeats: int = 10,
    warmup: int = 2,
    storage: str = DEFAULT_STORAGE,
    exports: Sequence[str | os.PathLike[str]] = (),
) -> BenchReport:
    """Times ``patterns``, full MAML and the plain PyTorch loop on the same tasks (``patternsearch bench``).

    Args:
        experiment: Benchmark, checkpoint and model.
        patterns: The patterns' texts.
        split: ``val`` or ``test`` (it prints accuracies: recorded in ``storage``'s ledger of looks).
        tasks: Tasks per round.
        seed: Seed of the tasks.
        repeats: Timed rounds, interleaved, after ``warmup`` untimed ones.
        warmup: Untimed rounds first.
        storage: Where a look at the test split is recorded (opened before any work).
        exports: Files ``patternsearch export`` wrote, timed adapting and predicting beside the patterns.
    """
    ledger = Ledger(open_storage(storage)) if split == "test" else None
    parsed = [experiment.pattern(text) for text in patterns]
    drawn = experiment.tasks(split, tasks, seed)
    rows = bench(experiment, parsed, drawn, repeats=repeats, warmup=warmup, exports=exports)
    if ledger is not None:
        ledger.record_scoring("bench", experiment.benchmark, [file_checksum(experiment.checkpoint_path)], parsed,
                              experiment.pattern("full"), drawn, seed)
    return BenchReport(tuple(rows), tasks, repeats)
