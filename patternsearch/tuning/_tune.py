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

import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from ..benchmarks import Benchmark
from ..checkpoint import check_writable
from ..confirmation import CandidateTest
from ..errors import StorageError, UsageError
from ..looks import Ledger
from ..records import Stored
from ..search import (
    CONFIG_ATTR,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    Selection,
    StudyConfig,
    completed_trials,
    creation_lock,
    default_study_name,
    open_storage,
    optimize,
    pattern_study_names,
    safe_url,
    study_experiment,
)
from ..spec import ExperimentSpec
from ..tables import optional, text_table
from ._lease import Lease, LeaseLost, stale_seconds
from ._plan import (
    CONFIG_ATTR as TUNE_CONFIG_ATTR,
)
from ._plan import (
    DEFAULT_MARGIN,
    PLAN_ATTR,
    RECORD_REMEDY,
    RESULT_ATTR,
    Plan,
    TuneConfig,
)
from ._schedule import format_duration
from ._session import TuningSession
from ._units import POLL_S, UnitResult, Units, enqueue_units, work

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def describe(self) -> str:
        """The lines ``tune`` prints: the selection, then the fronts before and after specialization."""
        return "\n".join([
            self.selection.describe(),
            "fronts before and after specialization (validation difference to full MAML on the parent; the test "
            "split's lower bound):",
            text_table(["pattern", "checkpoint", "speedup", "before", "after", "meta-updates", "confirmation"],
                       [(r.pattern, "parent" if r.after is None else Path(r.checkpoint).name, f"{r.speedup:.1f}x",
                         optional(r.before, "+.4f"), optional(r.after, "+.4f"), r.meta_updates,
                         "not tested" if r.lower_bound is None else
                         f"{r.lower_bound:+.4f} {'confirmed' if r.confirmed else 'not confirmed'}")
                        for r in self.fronts()]),
        ])

    def fronts(self) -> list[FrontRow]:
        """The fronts before and after specialization: the specialized candidates, then the parent's tested ones."""
        confirmation = self.selection.confirmation
        rows, parent_tests = [], list(() if confirmation is None else confirmation.candidates)
        for history in self.candidates:
            last, test = (history.rungs[-1] if history.rungs else None), history.confirmation
            rows.append(FrontRow(history.pattern, history.checkpoint, history.speedup, history.val_difference_before,
                                 None if last is None else last.val_difference, 0 if last is None else last.iterations,
                                 None if test is None else test.lower_bound, test is not None and test.confirmed))
            parent_tests = [c for c in parent_tests
                            if (c.pattern, c.checkpoint) != (history.pattern, history.checkpoint)]
        rows += [FrontRow(c.pattern, c.checkpoint or "", float(c.val_speedup or 0.0), c.val_difference, None, 0,
                          c.lower_bound, c.confirmed) for c in parent_tests]
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
    train_seed: int = 1,
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
    seed: int | None = None,
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
        train_seed: Seed of the specialization's episodes and of those tasks.
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
        seed: Deprecated spelling of ``train_seed`` (warns; removed in the next release).

    Raises:
        UsageError: Bad settings, an unknown study, another checkpoint than
            the study's, or settings the tuning study was not made with.
    """
    say = log or (lambda message: print(message, file=sys.stderr))
    if seed is not None:
        warnings.warn("tune(seed=...) is deprecated: it seeds the specialization, write train_seed=...",
                      DeprecationWarning, stacklevel=2)
        train_seed = seed
    spec = spec or ExperimentSpec()
    requested = dict(max_degradation=max_degradation, budget_s=budget_s, margin=margin, candidates=candidates,
                     reduction=reduction, val_tasks=val_tasks, train_seed=train_seed, confidence=confidence,
                     max_confirmed=max_confirmed, test_tasks=test_tasks,
                     report_tasks=test_tasks if report_tasks is None else report_tasks, test_seed=test_seed)
    TuneConfig(search_study="", parent_sha256="", **requested)  # bad numbers are refused before any work
    stale_seconds()  # and a bad lease setting
    name, study = _search(spec, storage, study_name, trials, search_options or {}, progress, say)
    study_config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    config = TuneConfig(search_study=name, parent_sha256=study_config.checkpoint_sha256,
                        out=os.fspath(Path(out or Path("tuned") / name).absolute()), **requested)
    tuning_name = name + TUNE_SUFFIX
    parent = study_experiment(study_config, data_root=spec.data_root, checkpoint=spec.checkpoint, device=spec.device)
    _refuse_early(storage, tuning_name, config, parent.benchmark, accept_test_looks)
    check_writable(Path(config.out) / "candidate.pt")
    say(f"pattern study {name!r}: {len(completed_trials(study))} complete trials; tuning study {tuning_name!r}")
    session = TuningSession(config, study, parent, spec.data_root, say, progress)
    with creation_lock(storage):  # SQLite: one process at a time creates tables and the plan
        rdb = open_storage(storage, heartbeat_interval=max(1, heartbeat_interval))
        ledger = Ledger(rdb)
        tuning = _tuning_study(rdb, tuning_name, config, session, say)
    plan = _read(Plan, "plan", tuning.user_attrs[PLAN_ATTR], tuning.study_name)
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


def _read(kind: type[Stored], what: str, values: dict[str, Any], study: str) -> Stored:
    """The ``what`` (configuration, plan) stored in tuning study ``study``, read back (another version's: one line)."""
    return kind.from_dict(values, what=f"the {what} of tuning study {study!r}", remedy=RECORD_REMEDY)


def _result(tuning: optuna.Study, storage: optuna.storages.BaseStorage) -> TuneResult:
    """A finished tuning study's answer and its candidates' histories."""
    plan = _read(Plan, "plan", tuning.user_attrs[PLAN_ATTR], tuning.study_name)
    selection = Selection.from_dict(tuning.user_attrs[RESULT_ATTR], what=f"the answer of tuning study "
                                    f"{tuning.study_name!r}", remedy=RECORD_REMEDY)
    results = Units(tuning, storage, plan).results()
    config = _read(TuneConfig, "configuration", tuning.user_attrs[TUNE_CONFIG_ATTR], tuning.study_name)
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


def _refuse_early(storage: str, name: str, config: TuneConfig, benchmark: Benchmark, accept_test_looks: bool) -> None:
    """Refuses, before any tuning, what the tuning cannot do.

    A configuration the tuning study ``name`` was not made with; and, for a tuning not yet answered, a
    confirmation that the ledgers of looks at ``benchmark``'s test split would refuse (unless accepted; see
    :mod:`patternsearch.looks`).
    """
    rdb = open_storage(storage, create=False)  # the pattern study is in it
    attrs = _stored_attrs(rdb, name)
    stored = attrs.get(TUNE_CONFIG_ATTR)
    found = [] if stored is None else config.differences(_read(TuneConfig, "configuration", stored, name))
    if found:
        raise UsageError(f"tuning study {name!r} was made with other settings: {'; '.join(found)}; use the same "
                         "settings, or another --study")
    if RESULT_ATTR not in attrs:
        Ledger(rdb).check(benchmark, config.confidence, accept=accept_test_looks)


def _tuning_study(storage: optuna.storages.BaseStorage, name: str, config: TuneConfig, session: TuningSession,
                  say: Callable[[str], None]) -> optuna.Study:
    """The tuning study; the worker that creates it makes the plan and enqueues the units, the others wait.

    The study's creation is the plan's lease (:mod:`patternsearch.tuning._lease`): a worker waits while its
    creator plans, and replaces a creator that was killed (or paused) before the plan was written. A creator
    that finds it was replaced commits nothing, deletes nothing, and waits for the other worker's plan.
    """
    lease, waiting_for = Lease(storage, name, done_attr=PLAN_ATTR), None
    while True:
        study_id = lease.take()
        if study_id is None:
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
            continue
        try:
            with lease.beating():
                plan = session.plan()
                study = optuna.load_study(study_name=name, storage=storage)
                if storage.get_study_id_from_name(name) != study_id:
                    raise LeaseLost(f"another worker took over {name!r} from this one")
                lease.check()  # the plan is committed only by the study's holder
                study.set_user_attr(TUNE_CONFIG_ATTR, config.to_dict())
                enqueue_units(study, plan)
                lease.check()
                study.set_user_attr(PLAN_ATTR, plan.to_dict())  # last: a study with a plan has its units
        except LeaseLost:
            say("another worker took over the tuning's plan while this one was silent; waiting for its plan")
            waiting_for = None
            continue
        except BaseException:
            lease.release()  # never left half-made (its own study only): a rerun starts afresh
            raise
        return optuna.load_study(study_name=name, storage=storage)


def _confirm_once(tuning: optuna.Study, storage: optuna.storages.BaseStorage, confirm: Callable[[], Selection],
                  say: Callable[[str], None]) -> None:
    """Stores the tuning's answer: one worker confirms (under a lease), the others wait for its answer.

    The confirming worker stores its answer only while it still holds the lease and no answer is stored; one
    that lost the lease (paused, or its heartbeat silent) discards its work and waits like the others.
    """
    lease, waiting_for = Lease(storage, tuning.study_name + CONFIRM_SUFFIX), None
    study_id = storage.get_study_id_from_name(tuning.study_name)

    def answered() -> bool:
        return RESULT_ATTR in storage.get_study_user_attrs(study_id)

    while not answered():
        if lease.take() is not None:
            try:
                with lease.beating():
                    if not answered():  # not answered meanwhile
                        selection = confirm()
                        lease.check()
                        if not answered():
                            storage.set_study_user_attr(study_id, RESULT_ATTR, selection.to_dict())
            except LeaseLost:
                say("another worker took over the confirmation while this one was silent; waiting for its answer")
                waiting_for = None
                continue
            finally:
                lease.release()
            return
        if lease.holder() != waiting_for:
            waiting_for = lease.holder()
            say(f"{waiting_for or 'another worker'} is confirming; waiting for its answer")
        time.sleep(POLL_S)


def _histories(plan: Plan, results: Sequence[UnitResult], selection: Selection) -> tuple[CandidateHistory, ...]:
    candidates = () if selection.confirmation is None else selection.confirmation.candidates
    tested = {(c.pattern, c.checkpoint): c for c in candidates}
    histories = []
    for index, planned in enumerate(plan.candidates):
        rungs = tuple(r for r in sorted(results, key=lambda r: r.rung) if r.candidate == index)
        histories.append(CandidateHistory(
            pattern=planned.pattern, checkpoint=planned.checkpoint, speedup=planned.speedup,
            val_difference_before=planned.val_difference, rungs=rungs,
            curve=tuple((r.iterations, r.val_accuracy) for r in rungs if not r.diverged),
            confirmation=tested.get((planned.pattern, planned.checkpoint))))
    return tuple(histories)
