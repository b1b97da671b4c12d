"""What ``select`` and ``tune`` answer: the selection record, versioned in the study (:mod:`patternsearch.records`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..records import from_record, to_record


@dataclass(frozen=True)
class Selection:
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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, versioned (see :mod:`patternsearch.records`)."""
        return to_record(self, SELECTION_VERSION)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, what: str, remedy: str) -> Selection:
        """A stored selection read back.

        Raises:
            RecordError: It was written by another version of patternsearch.
        """
        selection = from_record(cls, data, SELECTION_VERSION, what=what, remedy=remedy)
        return replace(selection, candidates=tuple(selection.candidates), earlier_looks=tuple(selection.earlier_looks))


SELECTION_VERSION = 2
"""Version of the stored :class:`Selection` (2: looks at the test split, divergences)."""
