"""The selection rule itself: propose candidates on validation, confirm them on test tasks.

Numbers in, a decision out: nothing here knows Optuna, a model or a study,
so the rule can be simulated thousands of times
(``tests/test_selection_error_rate.py``). :mod:`patternsearch.search`
feeds it a study's Pareto trials and the scores of real adaptations.

The promise: the selected pattern's accuracy is within ``max_degradation``
(D) of the baseline's, with probability at least ``confidence``.

1. **Validation proposes** (:func:`propose`): of the patterns faster than
   the baseline, those whose paired validation difference has a one-sided
   ``confidence`` lower bound of at least ``-D``, at most ``max_candidates``,
   fastest first. The list is fixed before any test task is scored.
2. **Confirmation tasks decide** (:func:`confirm_in_sequence`), by
   fixed-sequence testing: the candidates are tested slowest (on a Pareto
   front: most accurate) first, each confirmed when the one-sided
   ``confidence`` lower bound of its paired difference to the baseline on
   the same tasks is at least ``-D``; testing stops at the first candidate
   that is not confirmed, and the fastest confirmed one is selected (none:
   the baseline is the answer). A candidate is tested only after every
   earlier one was confirmed, so the probability of confirming any pattern
   whose true loss exceeds D is at most ``1 - confidence`` however many
   candidates there are (strong family-wise control).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .uncertainty import TaskDesign, estimate


@dataclass(frozen=True)
class Proposal:
    """A pattern that validation may propose.

    Attributes:
        pattern: The pattern's text.
        speedup: Its speedup over the baseline measured on validation.
        val_difference: Its validation accuracy minus the baseline's.
        val_differences: Per-task paired validation differences (empty when
            unknown: the pattern is then proposed on its point estimate).
        trial: Its trial in the study, if it has one.
    """

    pattern: str
    speedup: float
    val_difference: float
    val_differences: np.ndarray
    trial: int | None = None


@dataclass(frozen=True)
class CandidateTest:
    """One candidate of the selection and what the confirmation tasks said of it.

    Attributes:
        pattern: The pattern's text.
        trial: Its trial in the study (None for a pattern confirmed without
            a study, as are the validation fields).
        val_difference: Validation accuracy minus the baseline's.
        val_speedup: Speedup over the baseline measured on validation.
        test_difference: Mean paired difference on the confirmation tasks
            (None when it was not tested).
        lower_bound: One-sided lower confidence bound of that difference.
        confirmed: Whether ``lower_bound >= -max_degradation``.
    """

    pattern: str
    trial: int | None
    val_difference: float | None
    val_speedup: float | None
    test_difference: float | None = None
    lower_bound: float | None = None
    confirmed: bool = False


@dataclass(frozen=True)
class Decision:
    """Every candidate's test (fastest first) and the selected one (None: the baseline), with the reason."""

    candidates: tuple[CandidateTest, ...]
    selected: CandidateTest | None
    reason: str


def propose(proposals: Sequence[Proposal], design: TaskDesign, *, max_degradation: float, confidence: float,
            max_candidates: int) -> list[CandidateTest]:
    """The fastest proposals whose validation lower bound is at least ``-max_degradation`` (step 1).

    Args:
        proposals: Patterns faster than the baseline, fastest first (by the
            study's time objective).
        design: The validation tasks' design (classes and units).
        max_degradation: D, in accuracy units.
        confidence: Level of the validation lower bound.
        max_candidates: At most this many are returned.

    Returns:
        The candidates, fastest first.
    """
    candidates = []
    for proposal in proposals:
        if len(candidates) == max_candidates:
            break
        differences = np.asarray(proposal.val_differences, dtype=np.float64)
        if differences.size:
            task_design = design if design.units is None or len(design.units) == differences.size \
                else TaskDesign.none()
            if estimate(differences, task_design).lower_bound(confidence) < -max_degradation:
                continue
        candidates.append(CandidateTest(proposal.pattern, proposal.trial, proposal.val_difference,
                                        proposal.speedup))
    return candidates


def confirm_in_sequence(candidates: Sequence[CandidateTest], paired_differences: Callable[[str], np.ndarray],
                        design: TaskDesign, *, max_degradation: float, confidence: float) -> Decision:
    """Fixed-sequence testing of the candidates against the baseline (step 2).

    Args:
        candidates: Fastest first; tested slowest first.
        paired_differences: A candidate's per-task scores minus the
            baseline's on the confirmation tasks (called only for the
            candidates tested).
        design: The confirmation tasks' design.
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence.
    """
    tests = list(reversed(candidates))  # slowest (most accurate on validation) first
    selected = None
    for i, test in enumerate(tests):
        difference = estimate(paired_differences(test.pattern), design)
        bound = difference.lower_bound(confidence)
        tests[i] = replace(test, test_difference=difference.mean, lower_bound=bound,
                           confirmed=bound >= -max_degradation)
        if not tests[i].confirmed:
            break
        selected = tests[i]
    tests.reverse()  # fastest first again
    if not tests:
        return Decision((), None, f"no pattern faster than the baseline has a validation lower bound within "
                                  f"{max_degradation:g}; the baseline is the answer")
    if selected is None:
        first = tests[-1]
        return Decision(tuple(tests), None, f"the first candidate tested, {first.pattern}, has lower bound "
                                            f"{first.lower_bound:+.4f} < -{max_degradation:g}; the baseline is "
                                            "the answer")
    return Decision(tuple(tests), selected, f"the fastest confirmed candidate: lower bound "
                                            f"{selected.lower_bound:+.4f} >= -{max_degradation:g}")
