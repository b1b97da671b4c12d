"""``tune``: search, propose, specialize and confirm, in one resumable command (see ``docs/tune.md``).

1. **Search**: the pattern study is reused when it exists, else made by
   :func:`~patternsearch.search.optimize`.
2. **Propose** on the study's validation tasks only: the fastest patterns
   whose winner's-curse corrected validation lower bound is within
   ``D + margin`` (:func:`~patternsearch.confirmation.propose`).
3. **Specialize** them by synchronous successive halving
   (:mod:`patternsearch.tuning._schedule`), each unit a trial of the tuning
   study (:mod:`patternsearch.tuning._units`), ranked on validation tasks
   of their own.
4. **Confirm** every specialized candidate that validation still supports,
   together with the parent's own candidates (the ``select`` answer is
   among them), against full MAML on the parent by the graphical procedure
   of :mod:`patternsearch.confirmation`, on test tasks nothing above saw;
   the winner is reported on fresh test tasks. The family-wise error stays
   at most ``1 - confidence``: specialization and every choice before the
   confirmation used training and validation episodes only, so the
   confirmation's statistics are those of fixed candidates.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from ..benchmarks import Benchmark
from ..checkpoint import check_writable
from ..confirmation import CandidateTest
from ..errors import StorageError, UsageError, one_line
from ..experiment import Experiment
from ..looks import Ledger
from ..measurement import CachedScorer, adaptation_call, interleaved_latencies
from ..pattern import Pattern
from ..search import (
    CONFIG_ATTR,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    REPORT_TIMED_ROUNDS,
    REPORT_TIMED_TASKS,
    Selection,
    StudyConfig,
    completed_trials,
    confirm_candidates,
    creation_lock,
    default_study_name,
    measured,
    open_storage,
    optimize,
    pattern_study_names,
    safe_url,
    study_candidates,
    study_experiment,
    study_front,
)
from ..spec import ExperimentSpec
from ..training import meta_update_times, specialize
from ..uncertainty import TaskDesign, estimate
from ._lease import Lease
from ._plan import (
    CONFIG_ATTR as TUNE_CONFIG_ATTR,
)
from ._plan import (
    DEFAULT_MARGIN,
    PLAN_ATTR,
    RECORD_REMEDY,
    RESULT_ATTR,
    Plan,
    PlannedCandidate,
    TuneConfig,
    rungs_for,
    validation_lower_bound,
)
from ._schedule import expected_speedup, format_duration, smallest_budget
from ._units import POLL_S, UnitResult, Units, enqueue_units, work

_TIMED_VALIDATION_TASKS = 10
"""Validation tasks timed to plan a rung's fixed cost (scaled to all of them)."""
_TIMED_PER_CANDIDATE = 3
"""Patterns of the front's fast end timed when planning, per candidate to choose."""

TUNE_SUFFIX = ".tune"
CONFIRM_SUFFIX = ".confirming"
"""The lease of the worker confirming a tuning: ``<study>.tune.confirming`` while it runs."""


@dataclass(frozen=True)
class CandidateHistory:
    """One specialized candidate from proposal to confirmation.

    Attributes:
        pattern: Its pattern.
        checkpoint: Its specialized checkpoint.
        speedup: Its speedup over full MAML on the parent, timed when planning.
        val_difference_before: Its validation difference on the parent, in the study.
        rungs: What each rung it took part in measured (iterations, validation difference, score).
        curve: ``(meta-updates, validation score)`` after each rung it took part in.
        confirmation: How it fared on the test split (None: validation
            dropped it, or it did not fit among the candidates tested).
    """

    pattern: str
    checkpoint: str
    speedup: float
    val_difference_before: float
    rungs: tuple[UnitResult, ...]
    curve: tuple[tuple[int, float], ...]
    confirmation: CandidateTest | None


@dataclass(frozen=True)
class TuneResult:
    """The answer of ``tune`` and how it was reached.

    Attributes:
        tuning_study: The Optuna study holding the tuning's work and answer.
        config: What was asked.
        selection: The winner, confirmed against full MAML on the parent
            (pattern, checkpoint, speedup, lower bound, fresh-task
            accuracies; the parent with ``full`` when nothing was confirmed),
            and every candidate tested.
        candidates: Each specialized candidate's history.
    """

    tuning_study: str
    config: TuneConfig
    selection: Selection
    candidates: tuple[CandidateHistory, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def fronts(self) -> list[FrontRow]:
        """The fronts before and after specialization: the specialized candidates, then the parent's tested ones."""
        rows, parent_tests = [], list(self.selection.candidates)
        for history in self.candidates:
            last, test = (history.rungs[-1] if history.rungs else None), history.confirmation
            rows.append(FrontRow(history.pattern, history.checkpoint, history.speedup, history.val_difference_before,
                                 None if last is None else last.val_difference, 0 if last is None else last.iterations,
                                 None if test is None else test.lower_bound, test is not None and test.confirmed))
            parent_tests = [c for c in parent_tests if (c["pattern"], c.get("checkpoint")) !=
                            (history.pattern, history.checkpoint)]
        rows += [FrontRow(c["pattern"], c.get("checkpoint") or "", float(c["val_speedup"] or 0.0),
                          c["val_difference"], None, 0, c["lower_bound"], bool(c["confirmed"]))
                 for c in parent_tests]
        return rows


@dataclass(frozen=True)
class FrontRow:
    """One pattern before and after specialization, and its confirmation.

    Attributes:
        pattern: The pattern.
        checkpoint: The checkpoint it adapts (the parent for the parent's own candidates).
        speedup: Its speedup over full MAML, timed when planning (the study's estimate for an old plan).
        before: Its validation difference to full MAML on the parent (the study's).
        after: The same after specialization (None: not specialized).
        meta_updates: Its specialization's meta-updates.
        lower_bound: Its lower bound on the confirmation tasks (None: not tested).
        confirmed: Whether it was confirmed.
    """

    pattern: str
    checkpoint: str
    speedup: float
    before: float | None
    after: float | None
    meta_updates: int
    lower_bound: float | None
    confirmed: bool


def tune(
    max_degradation: float,
    spec: ExperimentSpec | None = None,
    *,
    budget_s: float = 7200.0,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    trials: int = 200,
    search_options: dict[str, Any] | None = None,
    candidates: int = 4,
    margin: float = DEFAULT_MARGIN,
    reduction: int = 2,
    val_tasks: int = 200,
    seed: int = 1,
    confidence: float = 0.95,
    max_confirmed: int = 4,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    heartbeat_interval: int = DEFAULT_HEARTBEAT_S,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    accept_test_looks: bool = False,
) -> TuneResult:
    """From a checkpoint to its fastest confirmed adaptation: search, specialize, confirm (see the module doc).

    Rerunning the same call continues where it stopped; several processes
    with one server storage (and one ``out`` folder they all see) share the
    specialization units.

    Args:
        max_degradation: D: allowed accuracy loss against full MAML on the parent.
        spec: Benchmark, data, checkpoint (the parent) and device.
        budget_s: Seconds of specialization, all candidates together.
        storage: Optuna storage URL of the pattern study and the tuning study.
        study_name: An existing pattern study (default: the default study,
            made first if missing).
        trials: Trials of a pattern study made here.
        search_options: Further options of :func:`~patternsearch.search.optimize`
            for a study made here (e.g. ``space``).
        candidates: Most patterns specialized.
        margin: Validation loss beyond D that specialization may close.
        reduction: Successive halving keeps ``1/reduction`` per rung.
        val_tasks: Validation tasks ranking the candidates between rungs.
        seed: Seed of the specialization's episodes and of those tasks.
        confidence: Family-wise confidence of the confirmation.
        max_confirmed: Most (pattern, checkpoint) pairs confirmed.
        test_tasks: Confirmation tasks.
        report_tasks: Fresh report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks.
        out: Folder of the specialized checkpoints (default ``tuned/<study>``).
        heartbeat_interval: Seconds between heartbeats of running units.
        progress: Show progress bars.
        log: Where messages go (default: standard error).
        accept_test_looks: Confirm even when a look that confirmed nothing
            (``evaluate --split test``) scored the test split before
            (recorded as not covered; see :mod:`patternsearch.looks`).

    Raises:
        UsageError: Bad settings, an unknown study, another checkpoint than
            the study's, or settings the tuning study was not made with.
    """
    say = log or (lambda message: print(message, file=sys.stderr))
    spec = spec or ExperimentSpec()
    requested = dict(max_degradation=max_degradation, budget_s=budget_s, margin=margin, candidates=candidates,
                     reduction=reduction, val_tasks=val_tasks, seed=seed, confidence=confidence,
                     max_confirmed=max_confirmed, test_tasks=test_tasks,
                     report_tasks=test_tasks if report_tasks is None else report_tasks, test_seed=test_seed)
    TuneConfig(search_study="", parent_sha256="", **requested)  # bad numbers are refused before any work
    name, study = _search(spec, storage, study_name, trials, search_options or {}, progress, say)
    study_config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    config = TuneConfig(search_study=name, parent_sha256=study_config.checkpoint_sha256,
                        out=os.fspath(Path(out or Path("tuned") / name).absolute()), **requested)
    tuning_name = name + TUNE_SUFFIX
    _refuse_changed(storage, tuning_name, config)
    check_writable(Path(config.out) / "candidate.pt")
    parent = study_experiment(study_config, data_root=spec.data_root, checkpoint=spec.checkpoint, device=spec.device)
    say(f"pattern study {name!r}: {len(completed_trials(study))} complete trials; tuning study {tuning_name!r}")
    session = _Session(config, study, parent, spec.data_root, say, progress)
    with creation_lock(storage):  # SQLite: one process at a time creates tables and the plan
        rdb = open_storage(storage, heartbeat_interval=max(1, heartbeat_interval))
        ledger = Ledger(rdb)
        if RESULT_ATTR not in _stored_attrs(rdb, tuning_name):  # refused before hours of specialization
            ledger.refuse_scored(study_config.benchmark, accept_scored=accept_test_looks)
        tuning = _tuning_study(rdb, tuning_name, config, session, say)
    plan = Plan.from_dict(tuning.user_attrs[PLAN_ATTR], study=tuning.study_name)
    units = Units(tuning, rdb, plan)
    if RESULT_ATTR not in tuning.user_attrs:
        if plan.candidates:
            total = sum(u.seconds for u in units.results())
            say(f"specializing {len(plan.candidates)} candidates ({', '.join(c.pattern for c in plan.candidates)}) "
                f"by successive halving, rungs of {', '.join(map(str, plan.rungs))}: budget "
                f"{format_duration(config.budget_s)}, {format_duration(total)} spent so far")
            work(units, session.run_unit(plan), log=say)
        _confirm_once(tuning, rdb, lambda: session.confirm(plan, units.results(), ledger,
                                                           accept_test_looks=accept_test_looks), say)
        tuning = optuna.load_study(study_name=tuning_name, storage=rdb)
    return _result(tuning, rdb)


def load_result(storage: str, study_name: str) -> TuneResult | None:
    """The stored answer of ``tune`` on a pattern study, or None when it has not finished (nothing is written)."""
    try:
        rdb = open_storage(storage, create=False)
        tuning = optuna.load_study(study_name=study_name + TUNE_SUFFIX, storage=rdb)
    except (StorageError, KeyError):
        return None
    return _result(tuning, rdb) if RESULT_ATTR in tuning.user_attrs else None


def _result(tuning: optuna.Study, storage: optuna.storages.BaseStorage) -> TuneResult:
    """A finished tuning study's answer and its candidates' histories."""
    plan = Plan.from_dict(tuning.user_attrs[PLAN_ATTR], study=tuning.study_name)
    selection = Selection.from_dict(tuning.user_attrs[RESULT_ATTR], what=f"the answer of tuning study "
                                    f"{tuning.study_name!r}", remedy=RECORD_REMEDY)
    results = Units(tuning, storage, plan).results()
    config = TuneConfig.from_dict(tuning.user_attrs[TUNE_CONFIG_ATTR], study=tuning.study_name)
    return TuneResult(tuning.study_name, config, selection,
                      _histories(plan, results, selection))


def _search(spec: ExperimentSpec, storage: str, study_name: str | None, trials: int, options: dict[str, Any],
            progress: bool, say: Callable[[str], None]) -> tuple[str, optuna.Study]:
    """The pattern study: an existing one as it is, else a new one searched now (``--study`` must exist).

    Says nothing of an existing one, so that a refusal after it is the only line printed.
    """
    try:
        rdb = open_storage(storage, create=False)
    except StorageError:
        if study_name is not None:
            raise
        rdb = None
    names = [] if rdb is None else pattern_study_names(rdb)
    if study_name is not None and study_name not in names:
        raise UsageError(f"no pattern study {study_name!r} in {safe_url(storage)}; pattern studies there: "
                         f"{', '.join(names) or 'none'}")
    name = study_name
    if name is None and spec.checkpoint is None:
        name = default_study_name(spec.benchmark, spec.model or "conv4", spec.ways, spec.shots)
    if name is not None and name in names:
        return name, optuna.load_study(study_name=name, storage=rdb)
    study = optimize(trials, spec, storage=storage, study_name=name, progress=progress, log=say, **options)
    return study.study_name, study


def _stored_attrs(storage: optuna.storages.BaseStorage, name: str) -> dict[str, Any]:
    """The user attributes of study ``name`` (empty when there is none)."""
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return {}


def _refuse_changed(storage: str, name: str, config: TuneConfig) -> None:
    """Refuses, reading only the database, a configuration the tuning study ``name`` was not made with."""
    try:
        rdb = open_storage(storage, create=False)
        study_id = rdb.get_study_id_from_name(name)
    except (StorageError, KeyError):
        return
    stored = rdb.get_study_user_attrs(study_id).get(TUNE_CONFIG_ATTR)
    found = [] if stored is None else config.differences(TuneConfig.from_dict(stored, study=name))
    if found:
        raise UsageError(f"tuning study {name!r} was made with other settings: {'; '.join(found)}; use the same "
                         "settings, or another --study")


def _tuning_study(storage: optuna.storages.BaseStorage, name: str, config: TuneConfig, session: _Session,
                  say: Callable[[str], None]) -> optuna.Study:
    """The tuning study; the worker that creates it makes the plan and enqueues the units, the others wait.

    The study's creation is the plan's lease (:mod:`patternsearch.tuning._lease`): a worker waits while its
    creator plans, and replaces a creator that was killed before the plan was written.
    """
    lease, waiting_for = Lease(storage, name, done_attr=PLAN_ATTR), None
    while not lease.take():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # removed between the two calls: try again
            continue
        if PLAN_ATTR in study.user_attrs:
            return study
        if lease.holder() != waiting_for:
            waiting_for = lease.holder()
            say(f"waiting for {waiting_for or 'another worker'} to make the tuning's plan")
        time.sleep(POLL_S)
    study = optuna.load_study(study_name=name, storage=storage)
    try:
        with lease.beating():
            plan = session.plan()
            study.set_user_attr(TUNE_CONFIG_ATTR, config.as_dict())
            enqueue_units(study, plan)
            study.set_user_attr(PLAN_ATTR, plan.as_dict())  # last: a study with a plan has its units
    except BaseException:
        optuna.delete_study(study_name=name, storage=storage)  # never left half-made: a rerun starts afresh
        raise
    return optuna.load_study(study_name=name, storage=storage)


def _confirm_once(tuning: optuna.Study, storage: optuna.storages.BaseStorage, confirm: Callable[[], Selection],
                  say: Callable[[str], None]) -> None:
    """Stores the tuning's answer: one worker confirms (under a lease), the others wait for its answer."""
    lease, waiting_for = Lease(storage, tuning.study_name + CONFIRM_SUFFIX), None
    study_id = storage.get_study_id_from_name(tuning.study_name)
    while RESULT_ATTR not in storage.get_study_user_attrs(study_id):
        if lease.take():
            try:
                with lease.beating():
                    if RESULT_ATTR not in storage.get_study_user_attrs(study_id):  # not answered meanwhile
                        storage.set_study_user_attr(study_id, RESULT_ATTR, confirm().as_dict())
            finally:
                lease.release()
            return
        if lease.holder() != waiting_for:
            waiting_for = lease.holder()
            say(f"{waiting_for or 'another worker'} is confirming; waiting for its answer")
        time.sleep(POLL_S)


def checkpoint_name(pattern: str) -> str:
    """A file name for a pattern's specialized checkpoint: ``00010:1`` -> ``00010-1.pt``."""
    return re.sub(r"[^0-9A-Za-z.]+", "-", pattern).strip("-") + ".pt"


class _Session:
    """One process's view of the tuning: the parent, the validation tasks and the baseline's scores on them."""

    def __init__(self, config: TuneConfig, study: optuna.Study, parent: Experiment, data_root: str | None,
                 say: Callable[[str], None], progress: bool) -> None:
        self.config, self.study, self.parent, self.say, self.progress = config, study, parent, say, progress
        self.data_root = data_root
        self.study_config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
        self.tasks = [t.to(parent.device) for t in parent.tasks("val", config.val_tasks, config.seed)]
        self.design = TaskDesign.of(self.tasks)

    @cached_property
    def baseline_scores(self) -> np.ndarray:
        """Full MAML on the parent, on the tuning's validation tasks."""
        scorer = CachedScorer(self.parent.model, self.parent.benchmark, self.tasks, self.parent.inner_lr)
        return scorer.scores(self.parent.pattern(self.study_config.baseline))

    @cached_property
    def study_validation(self) -> TaskDesign:
        """The design of the study's own validation tasks (what its proposals rest on)."""
        return TaskDesign.of(self.parent.tasks("val", self.study_config.tasks, self.study_config.task_seed))

    def plan(self) -> Plan:
        """The candidates (the fast end of the validation front at D + margin), their speedups and their costs."""
        config = self.config
        front = [c for c in study_front(self.study, self.study_validation,
                                        max_degradation=config.max_degradation + config.margin,
                                        confidence=config.confidence)
                 if c.pattern != self.study_config.baseline][:_TIMED_PER_CANDIDATE * config.candidates]
        own = self.own_candidates()
        speedups = self.measured_speedups([c.pattern for c in front] + [c.pattern for c in own])
        self.say("speedups timed on the parent (the study's estimates in brackets): " + ", ".join(
            f"{c.pattern} {speedups[c.pattern]:.1f}x ({c.val_speedup or 0.0:.1f}x)" for c in front))
        chosen = sorted(front, key=lambda c: -speedups[c.pattern])[:config.candidates]
        meta_batch = int(self.parent.checkpoint.config.get("meta_batch") or 1)
        first_order = bool(self.parent.checkpoint.config.get("first_order", False))
        self.say(f"timing one meta-update of each of {len(chosen)} candidates (meta-batch {meta_batch})")
        patterns = [self.parent.pattern(c.pattern) for c in chosen]
        times = meta_update_times(self.parent.model, self.parent.benchmark, patterns, self.parent.inner_lr,
                                  meta_batch=meta_batch, first_order=first_order, device=self.parent.device)
        sampling = _sampling_seconds(self.parent.benchmark, meta_batch, config.seed)
        planned = tuple(PlannedCandidate(
            pattern=c.pattern, speedup=speedups[c.pattern], val_difference=float(c.val_difference or 0.0),
            val_corrected=float(c.val_corrected if c.val_corrected is not None else math.nan),
            seconds_per_iteration=times[str(p)].median_ms / 1000.0 + sampling,
            checkpoint=os.fspath(Path(config.out) / checkpoint_name(c.pattern)),
            seconds_per_unit=self.unit_seconds(p), study_speedup=float(c.val_speedup or 0.0))
            for c, p in zip(chosen, patterns, strict=True))
        rungs = rungs_for(config, len(planned))
        smallest = smallest_budget(rungs, [c.seconds_per_unit + c.seconds_per_iteration for c in planned])
        if config.budget_s < smallest:
            raise UsageError(f"--budget {format_duration(config.budget_s)} does not cover the fixed costs of "
                             f"{len(planned)} candidates in {len(rungs)} rungs (each rung's share must pay a "
                             f"validation and one meta-update of each candidate in it): the smallest budget that "
                             f"works is {format_duration(math.ceil(smallest))}, or use fewer --candidates")
        parent_candidates = tuple(asdict(replace(c, checkpoint=str(self.parent.checkpoint_path),
                                                 val_speedup=speedups.get(c.pattern, c.val_speedup))) for c in own)
        return Plan(planned, rungs, speedups, parent_candidates)

    def own_candidates(self) -> list[CandidateTest]:
        """The parent's own candidates at D: what ``select`` would test (the safe fallback)."""
        config = self.config
        return study_candidates(self.study, self.study_validation, max_degradation=config.max_degradation,
                                confidence=config.confidence, max_candidates=config.max_confirmed)

    def measured_speedups(self, patterns: Sequence[str]) -> dict[str, float]:
        """Each pattern's speedup over the baseline on the parent, timed interleaved on a few validation tasks."""
        parent, baseline = self.parent, self.study_config.baseline
        names = list(dict.fromkeys([baseline, *patterns]))
        variants = {name: adaptation_call(parent.model, parent.pattern(name), parent.inner_lr,
                                          parent.benchmark.loss_fn) for name in names}
        stats = interleaved_latencies(variants, self.tasks[:REPORT_TIMED_TASKS], parent.device,
                                      repeats=REPORT_TIMED_ROUNDS)
        return {name: stats[name].speedup_over(stats[baseline]) for name in names if name != baseline}

    def unit_seconds(self, pattern: Pattern) -> float:
        """A rung's fixed cost on one candidate: two validations (training's, ranking's), timed on a few tasks."""
        sample = self.tasks[:_TIMED_VALIDATION_TASKS]
        began = time.perf_counter()
        CachedScorer(self.parent.model, self.parent.benchmark, sample, self.parent.inner_lr).scores(pattern)
        return 2.0 * (time.perf_counter() - began) * len(self.tasks) / len(sample)

    def run_unit(self, plan: Plan) -> Callable[[int, int, int], UnitResult]:
        """The function that specializes candidate ``c`` to the end of ``rung`` and measures it on validation."""
        config = self.config

        def run(rung: int, slot: int, candidate: int) -> UnitResult:
            planned = plan.candidates[candidate]
            target = plan.target(config, candidate, rung)
            added = target - (plan.target(config, candidate, rung - 1) if rung else 0)
            expected = added * planned.seconds_per_iteration + planned.seconds_per_unit
            self.say(f"rung {rung + 1}/{len(plan.rungs)}, candidate {planned.pattern}: specializing to {target} "
                     f"meta-updates (~{format_duration(expected)} for this rung)")
            began = time.perf_counter()
            try:  # the unit scores the candidate once, below: the training does not validate (val_every=0)
                special = specialize(self.parent.checkpoint_path, planned.pattern, target, planned.checkpoint,
                                     seed=config.seed, val_every=0, val_tasks=config.val_tasks,
                                     data_root=self.data_root, device=self.parent.device.type,
                                     benchmark=self.parent.benchmark, progress=self.progress)
                done = int(special.training.get("iteration", target))
                if done != target:
                    self.say(f"  {planned.checkpoint} already held {done} meta-updates, more than this rung's "
                             f"{target}: it was not made by this tuning; its numbers are those of {done}")
                result = self.measure(planned, rung, candidate, done)
            except FloatingPointError as error:  # dropped with its reason; the same seed would diverge again
                self.say(f"  {planned.pattern} dropped: {one_line(error)}")
                result = UnitResult.dropped(rung, candidate, target, 0.0, one_line(error))
            return replace(result, seconds=time.perf_counter() - began)  # meta-training and validation

        return run

    def measure(self, planned: PlannedCandidate, rung: int, candidate: int, iterations: int) -> UnitResult:
        """A specialized candidate's paired validation difference to the baseline, and its expected speedup."""
        special = self.parent.with_checkpoint(planned.checkpoint)
        scores = CachedScorer(special.model, special.benchmark, self.tasks, special.inner_lr).scores(
            special.pattern(planned.pattern))
        difference = estimate(scores - self.baseline_scores, self.design)
        score = expected_speedup(planned.speedup, difference.mean, difference.standard_error,
                                 self.config.max_degradation)
        self.say(f"  {planned.pattern} after {iterations} meta-updates: validation difference "
                 f"{difference.mean:+.4f} +/- {difference.ci95:.4f}, expected speedup {score:.1f}x")
        return UnitResult(rung=rung, candidate=candidate, iterations=iterations, val_difference=difference.mean,
                          val_standard_error=difference.standard_error, val_accuracy=float(np.mean(scores)),
                          score=score, seconds=0.0)

    def confirm(self, plan: Plan, results: Sequence[UnitResult], ledger: Ledger, *,
                accept_test_looks: bool) -> Selection:
        """The specialized candidates validation supports and the parent's own, confirmed on the test split.

        The look is recorded in ``ledger`` and spends its share of the error rate (see :mod:`patternsearch.looks`).
        """
        config, parent = self.config, self.parent
        parent_path = str(parent.checkpoint_path)
        contenders = [(test, parent if test.checkpoint == parent_path else parent.with_checkpoint(test.checkpoint))
                      for test in tune_contenders(plan, results, config)]
        self.say(f"confirming {len(contenders)} candidates against {self.study_config.baseline} on the parent, on "
                 f"{config.test_tasks} test tasks: " + ", ".join(
                     test.pattern + ("" if test.checkpoint == parent_path else " (specialized)")
                     for test, _ in contenders))
        trials = {t.number: t for t in completed_trials(self.study)}

        def fields_for(selected: CandidateTest | None) -> dict[str, Any]:
            trial = trials.get(selected.trial) if selected is not None and selected.trial is not None else None
            return {"study": config.search_study, "trial": None if trial is None else trial.number,
                    "val_accuracy": None if trial is None else measured(trial).accuracy,
                    "baseline_val_accuracy": None, "val_speedup": None if selected is None else selected.val_speedup,
                    "mixed_devices": False}

        return confirm_candidates(parent, contenders, config.max_degradation, fields_for=fields_for,
                                  ledger=ledger, command="tune", baseline=self.study_config.baseline,
                                  confidence=config.confidence, test_tasks=config.test_tasks,
                                  report_tasks=config.report_tasks, test_seed=config.test_seed,
                                  accept_test_looks=accept_test_looks)


def tune_contenders(plan: Plan, results: Sequence[UnitResult], config: TuneConfig) -> list[CandidateTest]:
    """What ``tune`` confirms, fastest first (the last is the anchor), from its plan and its units' results.

    Every specialized candidate whose validation lower bound after its last rung is within D, and the parent's
    own candidates frozen in the plan (not the parent's version of a pattern whose specialized version passed:
    it would only take a share of the error rate); at most ``max_confirmed``: the fastest and the slowest.
    """
    contenders = []
    for index, result in sorted(_final_results(results).items()):
        planned = plan.candidates[index]
        bound = validation_lower_bound(result.val_difference, result.val_standard_error, config.confidence)
        if bound >= -config.max_degradation:
            contenders.append(CandidateTest(planned.pattern, None, result.val_difference, planned.speedup,
                                            val_corrected=result.val_difference, val_lower_bound=bound,
                                            checkpoint=planned.checkpoint))
    specialized = {test.pattern for test in contenders}
    contenders += [CandidateTest(**c) for c in plan.parent_candidates if c["pattern"] not in specialized]
    contenders.sort(key=lambda test: -(test.val_speedup or 0.0))  # stable: specialized first at equal speed
    if len(contenders) > config.max_confirmed:
        contenders = contenders[:config.max_confirmed - 1] + contenders[-1:]
    return contenders


def _sampling_seconds(benchmark: Benchmark, meta_batch: int, seed: int, batches: int = 4) -> float:
    """The time to draw one meta-batch of training tasks (not in :func:`meta_update_times`)."""
    source = benchmark.split("train")
    began = time.perf_counter()
    for index in range(batches * meta_batch):
        source.task(index, seed)
    return (time.perf_counter() - began) / batches


def _final_results(results: Sequence[UnitResult]) -> dict[int, UnitResult]:
    """Each candidate's result after its last rung."""
    final: dict[int, UnitResult] = {}
    for result in sorted(results, key=lambda r: r.rung):
        final[result.candidate] = result
    return final


def _histories(plan: Plan, results: Sequence[UnitResult], selection: Selection) -> tuple[CandidateHistory, ...]:
    tested = {(c["pattern"], c.get("checkpoint")): CandidateTest(**c) for c in selection.candidates}
    histories = []
    for index, planned in enumerate(plan.candidates):
        rungs = tuple(r for r in sorted(results, key=lambda r: r.rung) if r.candidate == index)
        histories.append(CandidateHistory(
            pattern=planned.pattern, checkpoint=planned.checkpoint, speedup=planned.speedup,
            val_difference_before=planned.val_difference, rungs=rungs,
            curve=tuple((r.iterations, r.val_accuracy) for r in rungs if not r.diverged),
            confirmation=tested.get((planned.pattern, planned.checkpoint))))
    return tuple(histories)
