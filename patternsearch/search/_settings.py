"""What a confirmation on a test split promises and what it rests on, checked once when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from ..confirmation import DEFAULT_CANDIDATES, check_promise
from ..errors import UsageError

REPORT_TIMED_TASKS, REPORT_TIMED_ROUNDS = 5, 10
"""The fewest tasks and interleaved rounds a reported speedup rests on (50 paired adaptations of each pattern)."""


@dataclass(frozen=True)
class ConfirmationSettings:
    """The promise and the test split's share of the work, for ``select``, ``select --pattern`` and ``tune``.

    Each field is the keyword argument of the same name of
    :func:`~patternsearch.search.select` (``max_candidates``: its most
    candidates tested; ``report_tasks`` None: as many as ``test_tasks``),
    made into one object that is checked once, when it is made, and passed
    down to the confirmation.

    Raises:
        UsageError: When made with a setting out of its range (one line naming the option).
    """

    max_degradation: float = 0.01
    confidence: float = 0.95
    max_candidates: int = DEFAULT_CANDIDATES
    test_tasks: int = 600
    report_tasks: int | None = None
    test_seed: int = 0
    timed_tasks: int = REPORT_TIMED_TASKS
    timed_rounds: int = REPORT_TIMED_ROUNDS
    accept_test_looks: bool = False

    def __post_init__(self) -> None:
        if self.timed_tasks < 1 or self.timed_rounds < 1:
            raise UsageError(f"--timed-tasks and --timed-rounds must be at least 1, got {self.timed_tasks} and "
                             f"{self.timed_rounds}")
        check_promise(self.max_degradation, self.confidence)
        if self.max_candidates < 1:
            raise UsageError(f"--candidates must be at least 1, got {self.max_candidates}")
        if self.test_tasks < 2 or self.fresh_tasks < 2:
            raise UsageError(f"--tasks and --report-tasks must be at least 2, got {self.test_tasks} and "
                             f"{self.fresh_tasks}")

    @property
    def fresh_tasks(self) -> int:
        """Report tasks: ``report_tasks``, else as many as the confirmation's."""
        return self.test_tasks if self.report_tasks is None else self.report_tasks
