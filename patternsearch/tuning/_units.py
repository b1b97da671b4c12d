"""The specialization work as units in an Optuna study, so that workers share it and reruns resume it.

A unit is one candidate's specialization up to the end of one rung of the
successive halving. Every unit is enqueued when the plan is made, as a
waiting trial with ``rung`` and ``slot`` user attributes; a worker takes the
next one by running the study for one trial (Optuna hands each waiting
trial to one worker), which also keeps the trial's heartbeat, so a unit
whose worker died is retried (:func:`~patternsearch.search.open_storage`).
A unit of rung ``r > 0`` waits until rung ``r - 1`` is complete, then takes
the ``slot``-th survivor: the decision depends only on the completed units,
so every worker, and a rerun, makes the same one. The trial's value is the
candidate's within-weighted speedup after the unit; its user attributes hold the
validation numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import UsageError
from ..search import fail_stale_trials
from ._lease import worker_name
from ._plan import Plan
from ._schedule import RungScore, survivors

RUNG_ATTR, SLOT_ATTR, CANDIDATE_ATTR = "rung", "slot", "candidate"
POLL_S = 2.0
MAX_FAILURES = 3


@dataclass(frozen=True)
class UnitResult:
    """What a unit measured: the candidate after specialization to the rung's end, on the tuning's validation tasks.

    Attributes:
        rung: The rung.
        candidate: The candidate's index in the plan.
        iterations: Its meta-updates in total.
        val_difference: Validation accuracy minus the baseline's (on the parent).
        val_standard_error: That difference's standard error.
        val_accuracy: Its validation accuracy.
        score: Expected speedup (what successive halving ranks by).
        seconds: Wall time of the unit's meta-training.
        diverged: Why the candidate was dropped (its specialization or its
            validation diverged), or empty; a dropped candidate ranks last and
            validation never supports it.
        val_group_gap: How far below ``val_difference`` a new unit group may
            lie (:func:`~patternsearch.confirmation.new_group_gap`; 0 without
            groups, and for units recorded before it was).
    """

    rung: int
    candidate: int
    iterations: int
    val_difference: float
    val_standard_error: float
    val_accuracy: float
    score: float
    seconds: float
    diverged: str = ""
    val_group_gap: float = 0.0

    @classmethod
    def of(cls, trial: FrozenTrial) -> UnitResult:
        """A completed unit's result."""
        attrs = trial.user_attrs
        return cls(rung=int(attrs[RUNG_ATTR]), candidate=int(attrs[CANDIDATE_ATTR]),
                   iterations=int(attrs["iterations"]), val_difference=float(attrs["val_difference"]),
                   val_standard_error=float(attrs["val_standard_error"]),
                   val_accuracy=float(attrs["val_accuracy"]), score=float(trial.values[0]),
                   seconds=float(attrs["seconds"]), diverged=str(attrs.get("diverged", "")),
                   val_group_gap=float(attrs.get("val_group_gap", 0.0)))

    @classmethod
    def dropped(cls, rung: int, candidate: int, iterations: int, seconds: float, reason: str) -> UnitResult:
        """A candidate whose specialization or validation diverged: no validation numbers, ranked last (score -1)."""
        return cls(rung=rung, candidate=candidate, iterations=iterations, val_difference=math.nan,
                   val_standard_error=math.nan, val_accuracy=math.nan, score=-1.0, seconds=seconds,
                   diverged=reason)


def enqueue_units(study: optuna.Study, plan: Plan) -> None:
    """Enqueues every unit of the plan, rung by rung (waiting trials are handed out in this order)."""
    for rung, size in enumerate(plan.rungs):
        for slot in range(size):
            study.enqueue_trial({}, user_attrs={RUNG_ATTR: rung, SLOT_ATTR: slot})


def _unit_key(trial: FrozenTrial) -> tuple[int, int] | None:
    attrs = trial.user_attrs
    if RUNG_ATTR not in attrs:
        return None
    return int(attrs[RUNG_ATTR]), int(attrs[SLOT_ATTR])


class Units:
    """The tuning study's units, read straight from the database (other workers write them too)."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, plan: Plan) -> None:
        self.study, self.storage, self.plan = study, storage, plan
        self.study_id = self.storage.get_study_id_from_name(study.study_name)

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the tuning study."""
        return self.storage.get_all_trials(self.study_id, deepcopy=False)

    def completed(self) -> dict[tuple[int, int], FrozenTrial]:
        """The completed trial of each unit (the first, if a retry completed it twice)."""
        done: dict[tuple[int, int], FrozenTrial] = {}
        for trial in self.trials():
            key = _unit_key(trial)
            if key is not None and trial.state == TrialState.COMPLETE:
                done.setdefault(key, trial)
        return done

    def all_keys(self) -> list[tuple[int, int]]:
        """Every unit of the plan."""
        return [(rung, slot) for rung, size in enumerate(self.plan.rungs) for slot in range(size)]

    def finished(self) -> bool:
        """Whether every unit is complete."""
        return len(self.completed()) == len(self.all_keys())

    def results(self) -> list[UnitResult]:
        """Every completed unit's result, by rung and slot."""
        done = self.completed()
        return [UnitResult.of(done[key]) for key in sorted(done)]

    def candidate_for(self, rung: int, slot: int) -> int | None:
        """The candidate of a unit, or None while the previous rung is incomplete."""
        if rung == 0:
            return slot
        done = self.completed()
        previous = [done.get((rung - 1, s)) for s in range(self.plan.rungs[rung - 1])]
        if any(trial is None for trial in previous):
            return None
        standings = [RungScore(int(t.user_attrs[CANDIDATE_ATTR]),
                               self.plan.candidates[int(t.user_attrs[CANDIDATE_ATTR])].speedup, float(t.values[0]))
                     for t in previous if t is not None]
        return survivors(standings, self.plan.rungs[rung])[slot]

    def requeue(self, key: tuple[int, int]) -> None:
        """Enqueues a unit again (this worker gave it back, or was interrupted in it)."""
        self.study.enqueue_trial({}, user_attrs={RUNG_ATTR: key[0], SLOT_ATTR: key[1]})

    def requeue_lost(self) -> None:
        """Enqueues again every unit with no complete, waiting or running trial.

        Such a unit's worker stopped between failing it and enqueueing it
        again, or failed in it with an error; a worker interrupted normally
        enqueues its unit itself, and a killed one's unit is retried through
        its heartbeat.

        Raises:
            UsageError: A unit failed ``MAX_FAILURES`` times (its last error).
        """
        trials = self.trials()
        held = {_unit_key(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.WAITING,
                                                             TrialState.RUNNING)}
        for key in self.all_keys():
            if key in held:
                continue
            failed = [t for t in trials if _unit_key(t) == key and t.state == TrialState.FAIL]
            if len(failed) >= MAX_FAILURES:
                reason = " ".join(str(failed[-1].system_attrs.get("fail_reason", "unknown error")).split())
                raise UsageError(f"unit {key} of the tuning failed {len(failed)} times (last: {reason})")
            self.requeue(key)

    def earlier_waiting(self, rung: int) -> bool:
        """Whether a unit of an earlier rung waits for a worker (it must run before ``rung`` can)."""
        return any(t.state == TrialState.WAITING and (key := _unit_key(t)) is not None and key[0] < rung
                   for t in self.trials())

    def waiting(self) -> int:
        """Units waiting for a worker."""
        return sum(t.state == TrialState.WAITING and _unit_key(t) is not None for t in self.trials())

    def fail_stale(self) -> None:
        """Fails units whose worker stopped sending heartbeats; the storage's callback enqueues their retry."""
        fail_stale_trials(self.study)


class _NoUnit(Exception):
    """The trial Optuna handed out is not a unit (another worker took the last waiting one first)."""


class _GivenBack(Exception):
    """The unit's previous rung waits for a worker: the unit goes back to the queue, the earlier one runs first."""


class _Objective:
    """Runs the unit Optuna hands out; remembers it (``held``) so an interrupted or given-back unit is requeued."""

    def __init__(self, units: Units, run_unit: Callable[[int, int, int], UnitResult]) -> None:
        self.units, self.run_unit = units, run_unit
        self.held: tuple[int, int] | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        key = _unit_key(trial)  # type: ignore[arg-type]
        if key is None:
            raise _NoUnit
        self.held = key
        trial.set_user_attr("worker", worker_name())
        rung, slot = key
        candidate = self.units.candidate_for(rung, slot)
        while candidate is None:
            if self.units.earlier_waiting(rung):
                raise _GivenBack
            self.units.fail_stale()  # the previous rung runs elsewhere
            time.sleep(POLL_S)
            candidate = self.units.candidate_for(rung, slot)
        trial.set_user_attr(CANDIDATE_ATTR, candidate)
        result = self.run_unit(rung, slot, candidate)
        for name in ("iterations", "val_difference", "val_standard_error", "val_accuracy", "seconds", "diverged",
                     "val_group_gap"):
            trial.set_user_attr(name, getattr(result, name))
        return result.score


def work(units: Units, run_unit: Callable[[int, int, int], UnitResult], *, log: Callable[[str], None]) -> None:
    """Runs units until every one is complete (waiting for other workers' running units).

    Optuna hands out waiting units first in, first out; a unit whose
    previous rung is incomplete is given back while an earlier unit waits
    (a retried unit queues behind later rungs), and waited for while
    another worker runs it.

    Args:
        units: The tuning study's units.
        run_unit: Runs candidate ``c`` of ``(rung, slot)`` and returns its result.
        log: Where waiting messages go.
    """
    said_waiting = False
    units.requeue_lost()
    while not units.finished():
        if not units.waiting():
            if not said_waiting:
                log("waiting for units other workers are running")
                said_waiting = True
            units.fail_stale()
            units.requeue_lost()  # a unit whose worker failed in it (and exited) runs again here
            time.sleep(POLL_S)
            continue
        objective = _Objective(units, run_unit)
        study = optuna.load_study(study_name=units.study.study_name, storage=units.storage)
        try:
            study.optimize(objective, n_trials=1, catch=(_NoUnit, _GivenBack), gc_after_trial=False,
                           show_progress_bar=False)
        except KeyboardInterrupt:
            if objective.held is not None:  # the interrupted unit waits for the rerun
                units.requeue(objective.held)
            raise
        if objective.held is not None and objective.held not in units.completed():
            units.requeue(objective.held)  # given back (or failed): it goes on at the end of the queue
