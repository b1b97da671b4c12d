"""What ``select`` and ``tune`` answer: the selection record, nested by what each part is, versioned in the study.

A :class:`Selection` holds the answer (pattern, promise, verdict) and four
parts: what validation said (:class:`ValidationEvidence`), what the test
split's confirmation tasks decided (:class:`ConfirmationEvidence`, with the
look it spent), the accuracies on fresh report tasks (:class:`FreshReport`)
and the deployment timing (:class:`~patternsearch.measurement.DeploymentTiming`).
Stored with :mod:`patternsearch.records`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..confirmation import CandidateTest
from ..measurement import DeploymentTiming
from ..records import VersionedRecord
from ..uncertainty import Estimate, support


@dataclass(frozen=True)
class ValidationEvidence:
    """What the study's validation tasks said of the selected pattern (None fields without a study).

    Attributes:
        study: The pattern study.
        trial: The selected pattern's trial in it.
        accuracy: Its validation accuracy.
        baseline_accuracy: The baseline's.
        speedup: Its speedup as the study timed it (an estimate).
        mixed_devices: Whether the study's trials were timed on several devices.
    """

    study: str | None = None
    trial: int | None = None
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    speedup: float | None = None
    mixed_devices: bool = False


@dataclass(frozen=True)
class LookSpent:
    """This confirmation's place among the looks at the benchmark's test split (see :mod:`patternsearch.looks`).

    Attributes:
        number: Its place among the confirmations that spent at the split (1: the first).
        level: The error rate it decided at: half of what was left of the
            split's budget (a repeat: the level of the look it repeats).
        note: The same in words.
        earlier: The looks at the split before this one, and what each spent.
        covered: False when it was accepted despite earlier looks (one that
            confirmed nothing, or a promise that could no longer hold): not
            covered by the guarantee.
    """

    number: int
    level: float
    note: str
    earlier: tuple[str, ...] = ()
    covered: bool = True


@dataclass(frozen=True)
class ConfirmationEvidence:
    """What the test split's confirmation tasks decided.

    Attributes:
        candidates: Every candidate, fastest first: validation and confirmation numbers.
        lower_bound: The selected pattern's one-sided lower bound of its paired
            difference, at the level it held (None when the baseline is the answer).
        tasks: Confirmation tasks.
        classes: Distinct classes they drew.
        look: The look it was, and the error rate it spent.
    """

    candidates: tuple[CandidateTest, ...]
    lower_bound: float | None
    tasks: int
    classes: int | None
    look: LookSpent


@dataclass(frozen=True)
class FreshReport:
    """The selected pattern and the baseline on the report tasks, which took no part in the decision.

    Attributes:
        accuracy, ci95: The pattern's accuracy and its 95% half-width.
        baseline_accuracy, baseline_ci95: The baseline's.
        difference, difference_ci95: Their paired difference.
        tasks, classes, units: What they rest on.
        classes_disjoint: Whether report and confirmation tasks share no class.
        test_seed: Seed of the test tasks and of the split of the test characters.
    """

    accuracy: float
    ci95: float
    baseline_accuracy: float
    baseline_ci95: float
    difference: float
    difference_ci95: float
    tasks: int
    classes: int | None
    units: int | None
    classes_disjoint: bool
    test_seed: int

    @classmethod
    def of(cls, accuracy: Estimate, baseline: Estimate, difference: Estimate, *, classes_disjoint: bool,
           test_seed: int) -> FreshReport:
        """The report of three estimates on the same report tasks."""
        return cls(accuracy.mean, accuracy.ci95, baseline.mean, baseline.ci95, difference.mean, difference.ci95,
                   accuracy.tasks, accuracy.classes, accuracy.units, classes_disjoint, test_seed)

    def describe(self) -> str:
        """One line: both accuracies and the difference with their 95% intervals, and what they rest on."""
        fresh = "classes disjoint from the confirmation's" if self.classes_disjoint else \
            "the confirmation's classes, other episodes"
        return (f"accuracy on fresh test tasks ({support(self.tasks, self.classes, self.units)}; {fresh}): "
                f"{self.accuracy:.4f} +/- {self.ci95:.4f} vs {self.baseline_accuracy:.4f} +/- "
                f"{self.baseline_ci95:.4f}; difference {self.difference:+.4f} +/- {self.difference_ci95:.4f} "
                "(95% CI)")


@dataclass(frozen=True)
class Selection(VersionedRecord):
    """The selected pattern, the decision behind it, unbiased accuracies from fresh test tasks and its timing.

    Patterns are in explicit ``FLAGS:STEPS`` form; accuracies are the
    benchmark's score.

    Attributes:
        pattern: The selected pattern (the baseline when nothing was confirmed).
        baseline: The baseline pattern.
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence of the decision, across every look at the test split.
        confirmed: Whether a faster pattern was confirmed.
        reason: Why this pattern was selected, in words.
        validation: What validation said of it.
        confirmation: What the confirmation tasks decided (None: validation only, ``--no-confirm``).
        fresh: Accuracies on the report tasks (None: validation only).
        timing: Adaptation and adapt + predict time next to the baseline's, on report tasks (None: validation only).
        device: Where it was timed.
        environment: Versions and machine.
        checkpoint, baseline_checkpoint: The checkpoints the pattern and the
            baseline adapted (they differ when a specialized checkpoint is
            compared with its parent).
    """

    pattern: str
    baseline: str
    max_degradation: float
    confidence: float
    confirmed: bool
    reason: str
    validation: ValidationEvidence
    confirmation: ConfirmationEvidence | None = None
    fresh: FreshReport | None = None
    timing: DeploymentTiming | None = None
    device: str | None = None
    environment: dict[str, Any] | None = None
    checkpoint: str | None = None
    baseline_checkpoint: str | None = None

    RECORD_VERSION: ClassVar[int] = 3
    """2: looks at the test split, divergences; 3: nested by part."""

    def describe(self) -> str:
        """The lines ``select`` prints: the answer first (pattern, speedup, accuracy), then what it rests on."""
        confirmation, timing, validation = self.confirmation, self.timing, self.validation
        if confirmation is None:
            verdict = "validation only: not confirmed on test tasks"
        else:
            verdict = "confirmed" if self.confirmed else "not confirmed: the baseline is the answer"
        lines = [f"selected {self.pattern} ({verdict})"]
        if timing is not None:
            lines += [f"  speedup: {timing.speedup:.1f}x (adaptation {timing.latency_ms:.2f} ms vs "
                      f"{timing.baseline_latency_ms:.2f} ms for {self.baseline}, paired, measured now on held-out "
                      f"tasks; {self.device}; what the search optimises)",
                      f"  adapt + predict {timing.query_batch} queries: {timing.adapt_predict_ms:.2f} ms vs "
                      f"{timing.baseline_adapt_predict_ms:.2f} ms, {timing.adapt_predict_speedup:.1f}x end to end"]
            lines += [f"  timed: {timing.path}" if timing.path else "  timed: eager (a record made before deployment)"]
        if self.fresh is not None:
            lines.append(f"  {self.fresh.describe()}")
        if timing is None and validation.speedup is not None:
            lines.append(f"  estimated speedup (validation, not confirmed): {validation.speedup:.1f}x; validation "
                         f"accuracy {validation.accuracy:.4f} vs {validation.baseline_accuracy:.4f}")
        lines.append(f"  why: {self.reason}")
        if confirmation is not None:
            look = confirmation.look
            lines.append(f"  test split: {look.note}")
            lines += [f"    looked at before: {earlier}" for earlier in look.earlier[-3:]]
            if len(look.earlier) > 3:
                lines.append(f"    ... {len(look.earlier) - 3} earlier looks not shown")
        if self.baseline_checkpoint and self.baseline_checkpoint != self.checkpoint:
            lines.append(f"  checkpoints: {self.checkpoint} vs the baseline's {self.baseline_checkpoint}")
        if confirmation is not None and confirmation.candidates:
            lines.append(f"  candidates, fastest first, each tested on {confirmation.tasks} confirmation tasks "
                         f"({confirmation.classes or '-'} classes) at its own level (this look's error rate "
                         f"{confirmation.look.level:.3g}); speedups here are validation estimates:")
            lines += [f"    {self._describe_candidate(c, confirmation.tasks)}" for c in confirmation.candidates]
        return "\n".join(lines)

    def _describe_candidate(self, c: CandidateTest, tasks: int) -> str:
        corrected = "" if c.val_corrected is None else f" (corrected {c.val_corrected:+.4f})"
        validation = "" if c.val_difference is None else (
            f"validation {c.val_difference:+.4f}{corrected}, estimated {c.val_speedup:.1f}x; ")
        tested = "not tested" if c.lower_bound is None else (
            f"test {c.test_difference:+.4f}, lower bound {c.lower_bound:+.4f} at level {c.level:.3g}: "
            + ("confirmed" if c.confirmed else "not confirmed"))
        if c.diverged:
            tested = f"diverged on {c.diverged} of {tasks} confirmation tasks: not confirmed"
        where = "" if c.checkpoint in (None, self.baseline_checkpoint) else f" on {c.checkpoint}"
        return f"{c.pattern}{where}: {validation}{tested}"

    def rebuilt(self) -> Selection:
        """The selection with its parts as records again (see :meth:`from_dict`)."""
        confirmation: Any = self.confirmation
        if isinstance(confirmation, dict):
            confirmation = ConfirmationEvidence(
                tuple(CandidateTest(**c) for c in confirmation["candidates"]), confirmation["lower_bound"],
                confirmation["tasks"], confirmation["classes"],
                LookSpent(**{**confirmation["look"], "earlier": tuple(confirmation["look"]["earlier"])}))
        return replace(
            self, validation=_record(ValidationEvidence, self.validation), confirmation=confirmation,
            fresh=_record(FreshReport, self.fresh), timing=_record(DeploymentTiming, self.timing))


def _record(kind: type, value: Any) -> Any:
    """``value`` as a ``kind`` when it came back from JSON as a dict."""
    return kind(**value) if isinstance(value, dict) else value
