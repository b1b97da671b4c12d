"""What ``tune`` was asked to do (its configuration) and what it decided before specializing (its plan).

Both are stored in the tuning study, so a rerun or another worker reads
them back: a changed configuration is refused with its differences, and
the plan (candidates, their costs, the rungs) is made once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from scipy import special

from ..errors import UsageError
from ..records import VersionedRecord
from ..search import ConfirmationSettings
from ._schedule import rung_iterations, rung_sizes

CONFIG_ATTR = "tune_config"
PLAN_ATTR = "tune_plan"
RESULT_ATTR = "tune_result"

RECORD_VERSION = 2
"""Version of the stored configuration and plan (see :mod:`patternsearch.records`; 2: ``seed`` is ``train_seed``)."""
RECORD_REMEDY = "tune afresh under another --study name, or delete the tuning study (its name ends in .tune)"

DEFAULT_MARGIN = 0.015
"""How much more than D a candidate may lose on validation before specialization (see ``docs/tune.md``)."""


@dataclass(frozen=True)
class TuneConfig(VersionedRecord):
    """Everything that decides ``tune``'s work; a rerun must repeat it.

    Attributes:
        search_study: The pattern study candidates come from.
        parent_sha256: Checksum of the checkpoint the study was made with.
        max_degradation: D, in accuracy units.
        margin: Validation loss beyond D that specialization may still close.
        budget_s: Seconds of specialization (meta-training), all candidates together.
        candidates: Most candidates specialized.
        reduction: Successive halving keeps ``1/reduction`` of the candidates per rung.
        val_tasks: Validation tasks that rank candidates between rungs.
        train_seed: Seed of the specialization's training episodes and of those validation tasks.
        confidence: Family-wise confidence of the confirmation.
        max_confirmed: Most (pattern, checkpoint) pairs tested on the test split.
        test_tasks: Confirmation tasks.
        report_tasks: Fresh report tasks.
        test_seed: Seed of the test tasks.
        out: Folder of the specialized checkpoints.
    """

    search_study: str
    parent_sha256: str
    max_degradation: float
    budget_s: float
    margin: float = DEFAULT_MARGIN
    candidates: int = 4
    reduction: int = 2
    val_tasks: int = 200
    train_seed: int = 1
    confidence: float = 0.95
    max_confirmed: int = 4
    test_tasks: int = 600
    report_tasks: int = 600
    test_seed: int = 0
    out: str = "tuned"

    RECORD_VERSION: ClassVar[int] = RECORD_VERSION

    def __post_init__(self) -> None:
        self.confirmation()  # D, the confidence and the test split's tasks, checked as select checks them
        if not self.budget_s > 0.0:
            raise UsageError(f"--budget must be positive, got {self.budget_s}s")
        if self.margin < 0.0:
            raise UsageError(f"--margin must be at least 0, got {self.margin}")
        if self.candidates < 1:
            raise UsageError(f"--candidates must be at least 1, got {self.candidates}")
        if self.reduction < 2:
            raise UsageError(f"--reduction must be at least 2, got {self.reduction}")
        if self.val_tasks < 2:
            raise UsageError(f"--val-tasks must be at least 2, got {self.val_tasks}")

    def confirmation(self, accept_test_looks: bool = False) -> ConfirmationSettings:
        """The settings of the confirmation on the test split (``max_confirmed`` candidates at most).

        Raises:
            UsageError: D, the confidence or a task count is out of range.
        """
        return ConfirmationSettings(self.max_degradation, self.confidence, self.max_confirmed, self.test_tasks,
                                    self.report_tasks, self.test_seed, accept_test_looks=accept_test_looks)


    def differences(self, stored: TuneConfig) -> list[str]:
        """``name: stored -> requested`` for every setting that differs."""
        mine, theirs = asdict(self), asdict(stored)
        return [f"{name}: {theirs[name]!r} -> {value!r}" for name, value in mine.items() if theirs[name] != value]


@dataclass(frozen=True)
class PlannedCandidate:
    """A pattern chosen for specialization.

    Attributes:
        pattern: Its text.
        speedup: Its speedup over the baseline, timed when planning (see :attr:`Plan.speedups`).
        val_difference: Its validation difference to the baseline in the
            study, before specialization.
        val_corrected: The same, corrected for the winner's curse.
        seconds_per_iteration: Measured cost of one of its meta-updates
            (the meta-gradient and the sampling of its tasks).
        checkpoint: Where its specialization is written.
        seconds_per_unit: Measured fixed cost of one rung's work on it
            (its two validations: one by the training, one ranking it).
        study_speedup: Its speedup as the study estimated it (a few timings per trial).
    """

    pattern: str
    speedup: float
    val_difference: float
    val_corrected: float
    seconds_per_iteration: float
    checkpoint: str
    seconds_per_unit: float = 0.0
    study_speedup: float = math.nan


@dataclass(frozen=True)
class Plan(VersionedRecord):
    """The candidates, the rungs of the successive halving, and the speedups timed when planning.

    Attributes:
        candidates: The patterns specialized, fastest first.
        rungs: Candidates in each rung.
        speedups: Pattern text -> speedup over the baseline on the parent,
            timed interleaved on validation tasks when planning, for the
            patterns near the front's fast end and the parent's own
            candidates. The study times each trial a few times, enough to
            steer a search but not to tell close candidates apart (its
            fastest estimates are the lucky ones), so the choice of
            candidates and the order of the confirmation rest on these.
        parent_candidates: The parent's own candidates at D (what ``select``
            would test, each a :class:`~patternsearch.confirmation.CandidateTest`
            as a dict with its timed speedup), frozen here so that a resumed
            run, or another worker, confirms what a straight run would.
    """

    candidates: tuple[PlannedCandidate, ...]
    rungs: tuple[int, ...]
    speedups: dict[str, float] = field(default_factory=dict)
    parent_candidates: tuple[dict[str, Any], ...] = ()

    RECORD_VERSION: ClassVar[int] = RECORD_VERSION

    def rebuilt(self) -> Plan:
        """The plan with its candidates as records and its lists as tuples again (see :meth:`from_dict`)."""
        return Plan(tuple(PlannedCandidate(**c) for c in self.candidates), tuple(self.rungs), dict(self.speedups),
                    tuple(self.parent_candidates))

    def target(self, config: TuneConfig, candidate: int, rung: int) -> int:
        """Meta-updates ``candidate`` has in total at the end of ``rung``."""
        planned = self.candidates[candidate]
        return sum(rung_iterations(config.budget_s, self.rungs, r, planned.seconds_per_iteration,
                                   planned.seconds_per_unit) for r in range(rung + 1))


def rungs_for(config: TuneConfig, count: int) -> tuple[int, ...]:
    """The rung sizes for ``count`` candidates."""
    return tuple(rung_sizes(count, config.reduction)) if count else ()


def validation_lower_bound(difference: float, standard_error: float, confidence: float) -> float:
    """One-sided ``confidence`` lower bound of a validation difference (the difference itself without an error)."""
    if not math.isfinite(standard_error):
        return difference
    return difference - float(special.ndtri(confidence)) * standard_error

