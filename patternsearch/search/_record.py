"""What ``select`` and ``tune`` answer: the selection record, versioned in the study (:mod:`patternsearch.records`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..records import VersionedRecord
from ..uncertainty import support


@dataclass(frozen=True)
class Selection(VersionedRecord):
    """The selected pattern, the decision behind it and unbiased accuracies from fresh test tasks.

    Patterns are in explicit ``FLAGS:STEPS`` form; accuracies are the
    benchmark's score. Test fields are None when confirmation was skipped.

    Attributes:
        pattern: The selected pattern (the baseline when nothing was confirmed).
        confirmed: Whether a faster pattern was confirmed.
        reason: Why this pattern was selected, in words.
        confidence: Family-wise confidence of the decision.
        lower_bound: One-sided lower bound of the selected pattern's paired
            difference on the confirmation tasks, at the level the selected
            candidate held (its share of ``1 - confidence``; see
            :mod:`patternsearch.confirmation`).
        candidates: Every candidate, its validation and confirmation numbers.
        confirmation_tasks, confirmation_classes: What the decision rests on.
        test_accuracy, baseline_test_accuracy, difference: On the report
            tasks, which took no part in the decision, with 95% half-widths.
        test_tasks, test_classes: What those rest on.
        classes_disjoint: Whether report and confirmation tasks share no class.
        checkpoint, baseline_checkpoint: The checkpoints the pattern and the
            baseline adapted (they differ when a specialized checkpoint is
            compared with its parent).
        adapt_predict_ms, baseline_adapt_predict_ms, adapt_predict_speedup:
            Adapting and then predicting ``query_batch`` queries, as a
            deployment would, and the speedup of that (the search optimises
            ``speedup``, adaptation alone).
        query_batch: Queries predicted per task.
        timing_noise: A warning when the baseline's timing spread makes the
            ratios unreliable (None otherwise).
        look_number, look_level: This confirmation's place among the
            distinct confirmations at the benchmark's test split, and the
            error rate it spent (``(1 - confidence) / 2**look_number``; see
            :mod:`patternsearch.looks`); ``confidence`` holds across them all.
        look_note: The same in words.
        earlier_looks: The looks at this test split before this one.
        covered: False when the split was scored before by a look that
            confirmed nothing (accepted explicitly): not covered by the guarantee.

    Without a study (:func:`confirm_pattern`) the study, trial and
    validation fields are None.
    """

    study: str | None
    pattern: str
    baseline: str
    max_degradation: float
    confidence: float
    confirmed: bool
    reason: str
    trial: int | None
    val_accuracy: float | None
    baseline_val_accuracy: float | None
    val_speedup: float | None
    mixed_devices: bool
    candidates: tuple[dict[str, Any], ...] = ()
    lower_bound: float | None = None
    confirmation_tasks: int | None = None
    confirmation_classes: int | None = None
    test_accuracy: float | None = None
    test_ci95: float | None = None
    baseline_test_accuracy: float | None = None
    baseline_test_ci95: float | None = None
    difference: float | None = None
    difference_ci95: float | None = None
    test_tasks: int | None = None
    test_classes: int | None = None
    test_units: int | None = None
    classes_disjoint: bool | None = None
    latency_ms: float | None = None
    baseline_latency_ms: float | None = None
    speedup: float | None = None
    test_seed: int | None = None
    device: str | None = None
    environment: dict[str, Any] | None = None
    checkpoint: str | None = None
    baseline_checkpoint: str | None = None
    look_number: int | None = None
    look_level: float | None = None
    look_note: str | None = None
    earlier_looks: tuple[str, ...] = ()
    covered: bool = True
    adapt_predict_ms: float | None = None
    baseline_adapt_predict_ms: float | None = None
    adapt_predict_speedup: float | None = None
    query_batch: int | None = None
    timing_noise: str | None = None

    RECORD_VERSION: ClassVar[int] = 2
    """2: looks at the test split, divergences."""

    def describe(self) -> str:
        """The lines ``select`` prints: the answer first (pattern, speedup, accuracy), then what it rests on."""
        if self.confirmation_tasks is None:
            verdict = "validation only: not confirmed on test tasks"
        else:
            verdict = "confirmed" if self.confirmed else "not confirmed: the baseline is the answer"
        lines = [f"selected {self.pattern} ({verdict})"]
        if self.speedup is not None:
            lines += [f"  speedup: {self.speedup:.1f}x (adaptation {self.latency_ms:.2f} ms vs "
                      f"{self.baseline_latency_ms:.2f} ms for {self.baseline}, paired, measured now on held-out "
                      f"tasks; {self.device}; what the search optimises)",
                      f"  adapt + predict {self.query_batch} queries: {self.adapt_predict_ms:.2f} ms vs "
                      f"{self.baseline_adapt_predict_ms:.2f} ms, {self.adapt_predict_speedup:.1f}x end to end"]
        if self.test_accuracy is not None:
            rests_on = support(self.test_tasks or 0, self.test_classes, self.test_units)
            fresh = "classes disjoint from the confirmation's" if self.classes_disjoint else \
                "the confirmation's classes, other episodes"
            lines.append(f"  accuracy on fresh test tasks ({rests_on}; {fresh}): {self.test_accuracy:.4f} +/- "
                         f"{self.test_ci95:.4f} vs {self.baseline_test_accuracy:.4f} +/- "
                         f"{self.baseline_test_ci95:.4f}; difference {self.difference:+.4f} +/- "
                         f"{self.difference_ci95:.4f} (95% CI)")
        if self.speedup is None and self.val_speedup is not None:
            lines.append(f"  estimated speedup (validation, not confirmed): {self.val_speedup:.1f}x; validation "
                         f"accuracy {self.val_accuracy:.4f} vs {self.baseline_val_accuracy:.4f}")
        lines.append(f"  why: {self.reason}")
        if self.look_number is not None:
            lines.append(f"  test split: {self.look_note}")
            lines += [f"    looked at before: {look}" for look in self.earlier_looks[-3:]]
            if len(self.earlier_looks) > 3:
                lines.append(f"    ... {len(self.earlier_looks) - 3} earlier looks not shown")
        if self.baseline_checkpoint and self.baseline_checkpoint != self.checkpoint:
            lines.append(f"  checkpoints: {self.checkpoint} vs the baseline's {self.baseline_checkpoint}")
        if self.candidates:
            level = self.look_level if self.look_level is not None else 1 - self.confidence
            lines.append(f"  candidates, fastest first, each tested on {self.confirmation_tasks} confirmation tasks "
                         f"({self.confirmation_classes or '-'} classes) at its own level (this look's error rate "
                         f"{level:.3g}); speedups here are validation estimates:")
            lines += [f"    {self._describe_candidate(c)}" for c in self.candidates]
        return "\n".join(lines)

    def _describe_candidate(self, c: dict[str, Any]) -> str:
        corrected = "" if c.get("val_corrected") is None else f" (corrected {c['val_corrected']:+.4f})"
        validation = "" if c["val_difference"] is None else (
            f"validation {c['val_difference']:+.4f}{corrected}, estimated {c['val_speedup']:.1f}x; ")
        tested = "not tested" if c["lower_bound"] is None else (
            f"test {c['test_difference']:+.4f}, lower bound {c['lower_bound']:+.4f} at level {c['level']:.3g}: "
            + ("confirmed" if c["confirmed"] else "not confirmed"))
        if c.get("diverged"):
            tested = f"diverged on {c['diverged']} of {self.confirmation_tasks} confirmation tasks: not confirmed"
        where = "" if c.get("checkpoint") in (None, self.baseline_checkpoint) else f" on {c['checkpoint']}"
        return f"{c['pattern']}{where}: {validation}{tested}"

    def rebuilt(self) -> Selection:
        """The selection with its lists as tuples again (see :meth:`from_dict`)."""
        return replace(self, candidates=tuple(self.candidates), earlier_looks=tuple(self.earlier_looks))
