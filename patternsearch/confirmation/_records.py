"""What the rule works on and returns (proposals, each candidate's test, the decision), and the promise's check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError


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
        plain: Whether it is of the plainest kind searched (one phase at the
            base step size): such patterns fit fewer parameters to the
            validation tasks, so the anchor is taken from them when any is
            plausible.
    """

    pattern: str
    speedup: float
    val_difference: float
    val_differences: np.ndarray
    trial: int | None = None
    plain: bool = True


@dataclass(frozen=True)
class CandidateTest:
    """One candidate of the selection and what the confirmation tasks said of it.

    Attributes:
        pattern: The pattern's text.
        trial: Its trial in the study (None for a pattern confirmed without
            a study, as are the validation fields).
        val_difference: Validation accuracy minus the baseline's.
        val_speedup: Speedup over the baseline measured on validation.
        val_corrected: ``val_difference`` corrected for the winner's curse.
        val_lower_bound: The corrected difference's one-sided lower bound on validation.
        val_standard_error: The standard error behind that bound (what
            :func:`~patternsearch.confirmation.power_graph` predicts power with).
        test_difference: Mean paired difference on the confirmation tasks
            (None when it was not tested).
        lower_bound: One-sided lower confidence bound of that difference, at
            confidence ``1 - level``.
        level: The significance level the candidate held when testing ended
            (its share of ``1 - confidence``, plus what confirmed candidates
            passed on to it).
        confirmed: Whether ``lower_bound >= -max_degradation``.
        checkpoint: The checkpoint the candidate adapts, when candidates
            differ in it (``tune``: specialized checkpoints next to their
            parent); None: the one checkpoint of the comparison.
        diverged: Confirmation tasks on which its adaptation diverged (it is
            then not confirmed, and keeps its share of the error rate).
    """

    pattern: str
    trial: int | None
    val_difference: float | None
    val_speedup: float | None
    val_corrected: float | None = None
    val_lower_bound: float | None = None
    val_standard_error: float | None = None
    test_difference: float | None = None
    lower_bound: float | None = None
    level: float | None = None
    confirmed: bool = False
    checkpoint: str | None = None
    diverged: int = 0


@dataclass(frozen=True)
class Decision:
    """Every candidate's test (fastest first) and the selected one (None: the baseline), with the reason."""

    candidates: tuple[CandidateTest, ...]
    selected: CandidateTest | None
    reason: str


def check_promise(max_degradation: float, confidence: float | None = None) -> None:
    """Refuses a promise the rule cannot make: D outside [0, 1], a confidence outside [0.5, 1).

    The one check of D and the confidence, for every command that takes them.

    Raises:
        UsageError: Naming the option and the value.
    """
    if not 0.0 <= max_degradation <= 1.0:
        raise UsageError(f"--max-degradation must be between 0 and 1, got {max_degradation}")
    if confidence is not None and not 0.5 <= confidence < 1.0:
        raise UsageError(f"--confidence must be in [0.5, 1), got {confidence}")
