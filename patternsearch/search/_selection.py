"""``select``: a study's candidates confirmed on test tasks, and reported on fresh ones.

The statistical rule (proposal on validation, a graphical confirmation over
the candidates) is :mod:`patternsearch.confirmation`; this module feeds it a
study's Pareto trials and real adaptations, then measures the selected
pattern on **report tasks**: tasks from the test split's other units (a
quarter of its characters for Omniglot) when the benchmark exposes them, which took no part in the
decision, so the accuracies ``select`` prints are unbiased.

Intervals account for tasks that share classes (:mod:`patternsearch.uncertainty`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from ..benchmarks import Task, disjoint_task_sets
from ..checkpoint import CheckpointError, default_checkpoint_path, file_checksum, load_checkpoint
from ..confirmation import (
    DEFAULT_CANDIDATES,
    CandidateTest,
    Decision,
    Proposal,
    check_promise,
    confirm_in_sequence,
    propose,
    validation_front,
)
from ..devices import device_name
from ..errors import UsageError
from ..experiment import Experiment, check_pairable, open_experiment
from ..looks import Ledger, Look, Spending, look_identity, unit_names
from ..measurement import CachedScorer, Measurement, deployment_timing, environment
from ..pattern import Pattern
from ..records import from_record, to_record
from ..spec import ExperimentSpec
from ..uncertainty import Estimate, TaskDesign, estimate
from ._config import CONFIG_ATTR, SELECTION_ATTR, StudyConfig, pattern_study_names
from ._pareto import Choice, baseline_trial, choose, completed_trials, measured
from ._storage import DEFAULT_STORAGE, load_existing_study, open_storage
from ._study import default_study_name


class PairedScores:
    """Candidates and the baseline scored on one fixed task list, each on its own checkpoint.

    The candidate side always adapts ``experiment``'s model and the baseline
    side ``reference``'s (the same experiment unless a specialized
    checkpoint is compared with its parent), whatever the patterns: a
    candidate equal to the baseline pattern is still scored on the
    candidate's checkpoint.
    """

    def __init__(self, experiment: Experiment, reference: Experiment, baseline: Pattern,
                 tasks: Sequence[Task]) -> None:
        self.design = TaskDesign.of(tasks)
        self.tasks = list(tasks)
        self.baseline = baseline
        self._candidate = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
        self._reference = self._candidate if reference is experiment else CachedScorer(
            reference.model, reference.benchmark, tasks, reference.inner_lr)
        self._experiment = experiment

    def on(self, experiment: Experiment) -> PairedScores:
        """The same tasks and baseline scorer, with candidates adapted on ``experiment``'s checkpoint."""
        other = copy.copy(self)
        if experiment is not self._experiment:
            other._experiment = experiment
            other._candidate = CachedScorer(experiment.model, experiment.benchmark, self.tasks, experiment.inner_lr)
        return other

    def candidate_scores(self, pattern: str | Pattern) -> np.ndarray:
        """Per-task scores of ``pattern`` adapted on the candidate's checkpoint."""
        return self._candidate.scores(self._experiment.pattern(pattern))

    def baseline_scores(self) -> np.ndarray:
        """Per-task scores of the baseline adapted on the baseline's checkpoint."""
        return self._reference.scores(self.baseline)

    def differences(self, pattern: str | Pattern) -> np.ndarray:
        """Paired per-task differences, candidate minus baseline."""
        return self.candidate_scores(pattern) - self.baseline_scores()


REPORT_TIMED_TASKS, REPORT_TIMED_ROUNDS = 5, 10
"""The fewest tasks and interleaved rounds a reported speedup rests on (50 paired adaptations of each pattern)."""


def proposals(study: optuna.Study) -> tuple[list[Proposal], np.ndarray]:
    """Every pattern of the study faster than the baseline as a proposal, and every pattern's validation difference.

    All complete patterns are proposals, not only the Pareto front: the
    winner's-curse correction of :func:`~patternsearch.confirmation.propose`
    can reorder them. The differences of all patterns compared (slower ones
    too) set the size of that correction.

    Raises:
        SelectionError: If the baseline has no complete trial.
    """
    trials = completed_trials(study)
    baseline = measured(baseline_trial(study, trials))
    base_scores = np.asarray(baseline.scores, dtype=np.float64)
    unique: dict[str, tuple[int, Measurement]] = {}
    for trial in trials:
        record = measured(trial)
        unique.setdefault(record.pattern, (trial.number, record))
    result = []
    for number, record in unique.values():
        if record.pattern == baseline.pattern or record.speedup <= baseline.speedup:
            continue
        scores = np.asarray(record.scores, dtype=np.float64)
        result.append(Proposal(
            pattern=record.pattern, speedup=record.speedup, val_difference=record.accuracy - baseline.accuracy,
            val_differences=scores - base_scores if scores.size == base_scores.size else np.empty(0),
            trial=number, plain=Pattern.parse(record.pattern).is_single_phase))
    compared = np.array([record.accuracy - baseline.accuracy for _, record in unique.values()
                         if record.pattern != baseline.pattern])
    return result, compared


def study_front(study: optuna.Study, validation: TaskDesign, *, max_degradation: float,
                confidence: float) -> list[CandidateTest]:
    """The whole validation front of a study's trials, fastest first (the last is the anchor).

    See :func:`~patternsearch.confirmation.validation_front`.
    """
    offered, compared = proposals(study)
    return validation_front(offered, validation, max_degradation=max_degradation, confidence=confidence,
                            compared=compared)


def study_candidates(study: optuna.Study, validation: TaskDesign, *, max_degradation: float, confidence: float,
                     max_candidates: int) -> list[CandidateTest]:
    """The candidates validation proposes from a study's trials, fastest first (the last is the anchor).

    See :func:`~patternsearch.confirmation.propose`.
    """
    offered, compared = proposals(study)
    return propose(offered, validation, max_degradation=max_degradation, confidence=confidence,
                   max_candidates=max_candidates, compared=compared)


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


def resolve_study(storage: str, study_name: str | None) -> optuna.Study:
    """Loads a study that must exist, without creating or writing anything.

    Args:
        storage: Storage URL.
        study_name: Study name; default: the only study in the storage.
    """
    rdb = open_storage(storage, create=False)
    return load_existing_study(_resolve_study_name(rdb, study_name), rdb, storage)


def _resolve_study_name(storage: optuna.storages.BaseStorage, name: str | None) -> str:
    if name:
        return name
    names = pattern_study_names(storage)
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError("the storage holds no study; run 'patternsearch optimize' first")
    default = default_study_name("omniglot-small", "conv4", 5, 1)
    if default in names:
        return default
    raise UsageError(f"the storage holds several studies ({', '.join(sorted(names))}); name one with --study")


def study_experiment(config: StudyConfig, *, data_root: str | os.PathLike[str] | None,
                     checkpoint: str | os.PathLike[str] | None, device: str,
                     baseline_checkpoint: str | os.PathLike[str] | None = None) -> Experiment:
    """Re-opens the experiment a study was made with, after checking its checkpoints without loading any data.

    Raises:
        UsageError: If the checkpoint is not the study's (checksums differ).
        CheckpointError: A missing checkpoint, or a baseline checkpoint of
            another benchmark, ways or shots.
    """
    path = Path(checkpoint) if checkpoint else default_checkpoint_path(config.benchmark, config.model, config.ways,
                                                                        config.shots)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass the study's checkpoint with --checkpoint")
    checksum = file_checksum(path)
    if checksum != config.checkpoint_sha256:
        raise UsageError(f"checkpoint {path} (sha256 {checksum[:12]}...) is not the one the "
                         f"study was made with (sha256 {config.checkpoint_sha256[:12]}...); pass --checkpoint")
    if baseline_checkpoint is not None:
        check_pairable(load_checkpoint(baseline_checkpoint), config.benchmark, config.ways, config.shots,
                       baseline_checkpoint)
    return open_experiment(ExperimentSpec(
        benchmark=config.benchmark, model=config.model, ways=config.ways, shots=config.shots,
        queries=config.queries, data_root=None if data_root is None else os.fspath(data_root),
        benchmark_options=config.benchmark_options, checkpoint=str(path), device=device))


def select(
    max_degradation: float = 0.01,
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    confirm: bool = True,
    confidence: float = 0.95,
    max_candidates: int = DEFAULT_CANDIDATES,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    baseline_checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    timed_tasks: int = REPORT_TIMED_TASKS,
    timed_rounds: int = REPORT_TIMED_ROUNDS,
    accept_test_looks: bool = False,
) -> Selection:
    """Selects the fastest pattern confirmed within ``max_degradation`` of the baseline (see the module doc).

    Args:
        max_degradation: Allowed accuracy loss against the baseline (0.01 = one point).
        storage: Optuna storage URL.
        study_name: Study (default: the only one in the storage, else the
            default study of ``optimize``, ``omniglot-small-conv4-5w1s``).
        confirm: Confirm on test tasks; without it the fastest validation
            candidate is returned unconfirmed.
        confidence: Probability that a selected pattern is truly within D,
            across every confirmation at the test split (each run spends a
            share; see :mod:`patternsearch.looks`).
        max_candidates: Most candidates tested (see :func:`~patternsearch.confirmation.plan`).
        test_tasks: Confirmation tasks.
        report_tasks: Report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks and of the split of the test characters (3/4 decide, 1/4 report).
        data_root: Data folder.
        checkpoint: Checkpoint (default: the study configuration's default
            path); its checksum must match the study's.
        baseline_checkpoint: Adapt the baseline on this checkpoint on the
            test tasks (e.g. the parent of a specialized checkpoint).
        device: ``auto``, ``cpu`` or ``cuda``.
        timed_tasks: Report tasks the reported speedup is timed on.
        timed_rounds: Interleaved timing rounds on each of them.
        accept_test_looks: Confirm even when a look that confirmed nothing
            (``evaluate --split test``) scored the split before (recorded as not covered).

    Raises:
        UsageError: Missing study or trials, bad arguments, another checkpoint,
            or an earlier look at the test split that confirmed nothing.
    """
    report_tasks = _check_arguments(max_degradation, confidence, max_candidates, test_tasks, report_tasks,
                                    timed_tasks, timed_rounds)
    study = resolve_study(storage, study_name)
    choice = choose(study, max_degradation)
    validation = _validation_fields(study.study_name, choice, max_degradation, confidence)
    if not confirm:
        fastest = choice.selected
        result = Selection(**{**validation, **_trial_fields(fastest),
                              "reason": "validation only (--no-confirm): the fastest pattern within the "
                                        "degradation on validation, not confirmed"})
    else:
        result = _confirm(study, choice, validation, Ledger(open_storage(storage, create=False)),
                          max_degradation=max_degradation, confidence=confidence,
                          max_candidates=max_candidates, test_tasks=test_tasks, report_tasks=report_tasks,
                          test_seed=test_seed, data_root=data_root, checkpoint=checkpoint,
                          baseline_checkpoint=baseline_checkpoint, device=device, timed_tasks=timed_tasks,
                          timed_rounds=timed_rounds, accept_test_looks=accept_test_looks)
    study.set_user_attr(SELECTION_ATTR, result.as_dict())
    return result


def _check_arguments(max_degradation: float, confidence: float, max_candidates: int, test_tasks: int,
                     report_tasks: int | None, timed_tasks: int, timed_rounds: int) -> int:
    """Validates select's numbers; returns the report task count."""
    if timed_tasks < 1 or timed_rounds < 1:
        raise UsageError(f"--timed-tasks and --timed-rounds must be at least 1, got {timed_tasks} and {timed_rounds}")
    check_promise(max_degradation, confidence)
    if max_candidates < 1:
        raise UsageError(f"--candidates must be at least 1, got {max_candidates}")
    report_tasks = test_tasks if report_tasks is None else report_tasks
    if test_tasks < 2 or report_tasks < 2:
        raise UsageError(f"--tasks and --report-tasks must be at least 2, got {test_tasks} and {report_tasks}")
    return report_tasks


def confirm_pattern(
    experiment: Experiment,
    pattern: str,
    max_degradation: float = 0.01,
    *,
    storage: str = DEFAULT_STORAGE,
    baseline: str = "full",
    baseline_checkpoint: str | os.PathLike[str] | None = None,
    confidence: float = 0.95,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    timed_tasks: int = REPORT_TIMED_TASKS,
    timed_rounds: int = REPORT_TIMED_ROUNDS,
    accept_test_looks: bool = False,
) -> Selection:
    """Confirms one given pattern against the baseline with the selection's rule, without a study.

    For a pattern chosen elsewhere, typically a specialized checkpoint's
    pattern against full MAML on its parent (``baseline_checkpoint``): the
    pattern is confirmed when the one-sided lower bound of its paired
    difference on the confirmation tasks is at least ``-D`` at the error
    rate this look may spend (see :mod:`patternsearch.looks`), and its
    accuracies are then measured on fresh report tasks (see the module doc).

    Args:
        experiment: Benchmark, checkpoint and model the pattern adapts.
        pattern: The pattern's text.
        max_degradation: D, in accuracy units.
        storage: Optuna storage URL holding the ledger of looks at test splits (made if missing).
        baseline: The baseline's text (default ``full``, of the baseline's checkpoint).
        baseline_checkpoint: Checkpoint the baseline adapts (default: the same).
        confidence: Probability that a confirmed pattern is truly within D, across every look.
        test_tasks: Confirmation tasks.
        report_tasks: Report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks and of the split of the test characters (3/4 decide, 1/4 report).
        timed_tasks: Report tasks the reported speedup is timed on.
        timed_rounds: Interleaved timing rounds on each of them.
        accept_test_looks: Confirm even when a look that confirmed nothing
            (``evaluate --split test``) scored the split before (recorded as not covered).

    Raises:
        UsageError: Bad arguments, or an earlier look that confirmed nothing.
        CheckpointError: A baseline checkpoint of another benchmark or model.
    """
    reference = experiment if baseline_checkpoint is None else experiment.with_checkpoint(baseline_checkpoint)
    candidate = CandidateTest(str(experiment.pattern(pattern)), None, None, None,
                              checkpoint=str(experiment.checkpoint_path))
    return confirm_candidates(
        reference, [(candidate, experiment)], max_degradation, ledger=Ledger(open_storage(storage)),
        command="select --pattern", baseline=baseline, confidence=confidence, test_tasks=test_tasks,
        report_tasks=report_tasks, test_seed=test_seed, timed_tasks=timed_tasks, timed_rounds=timed_rounds,
        accept_test_looks=accept_test_looks,
        fields_for=lambda _: {"study": None, "trial": None, "val_accuracy": None, "baseline_val_accuracy": None,
                              "val_speedup": None, "mixed_devices": False})


def confirm_candidates(
    reference: Experiment,
    contenders: Sequence[tuple[CandidateTest, Experiment]],
    max_degradation: float,
    *,
    fields_for: Callable[[CandidateTest | None], dict[str, Any]],
    ledger: Ledger,
    command: str,
    baseline: str = "full",
    confidence: float = 0.95,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    timed_tasks: int = REPORT_TIMED_TASKS,
    timed_rounds: int = REPORT_TIMED_ROUNDS,
    accept_test_looks: bool = False,
) -> Selection:
    """Confirms candidates, each on its own checkpoint, against the baseline on ``reference``; reports the winner.

    The look is recorded in ``ledger`` first (before any score is seen), and
    :func:`confirm_look` tests the candidates on the confirmation tasks of
    the test split at the error rate the look may spend; the selected
    candidate (or the baseline when none is confirmed) is then measured on
    the fresh report tasks and timed next to the baseline.

    Args:
        reference: The experiment whose checkpoint the baseline adapts.
        contenders: Fastest first, each candidate with the experiment
            (checkpoint) it adapts; the last is the anchor.
        max_degradation: D, in accuracy units.
        fields_for: The study, trial and validation fields of the
            :class:`Selection` for the selected candidate (None: the baseline).
        ledger: The looks at test splits of the storage.
        command: What looks, for the ledger (``select``, ``tune``, ...).
        baseline: The baseline's text.
        confidence: Family-wise confidence across every look at the split.
        test_tasks: Confirmation tasks.
        report_tasks: Report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks and of the split of the test characters (3/4 decide, 1/4 report).
        timed_tasks: Report tasks the reported speedup is timed on.
        timed_rounds: Interleaved timing rounds on each of them.
        accept_test_looks: Confirm despite an earlier look that confirmed nothing.

    Raises:
        UsageError: Bad arguments, or an earlier look that confirmed nothing.
    """
    report_tasks = _check_arguments(max_degradation, confidence, max(1, len(contenders)), test_tasks, report_tasks,
                                    timed_tasks, timed_rounds)
    base = reference.pattern(baseline)
    decision_tasks, fresh_tasks, disjoint = disjoint_task_sets(reference.benchmark, "test", test_tasks,
                                                               report_tasks, test_seed)
    checksums = {id(e): file_checksum(e.checkpoint_path) for e in [reference, *(e for _, e in contenders)]}
    look = Look(command, reference.benchmark.name, look_identity(
        benchmark=reference.benchmark.name, seed=test_seed, tasks=test_tasks, report_tasks=report_tasks,
        baseline=[str(base), checksums[id(reference)]], max_degradation=max_degradation, confidence=confidence,
        candidates=[[asdict(c), checksums[id(e)]] for c, e in contenders]),
        unit_names([*decision_tasks, *fresh_tasks], test_seed), tuple(sorted(set(checksums.values()))),
        tuple(c.pattern for c, _ in contenders), confirms=True)
    confirmation = PairedScores(reference, reference, base, [t.to(reference.device) for t in decision_tasks])
    scorers = {candidate: confirmation.on(experiment) for candidate, experiment in contenders}
    decision, spending = confirm_look(
        [candidate for candidate, _ in contenders], lambda c: scorers[c].differences(c.pattern), confirmation.design,
        look, ledger, max_degradation=max_degradation, confidence=confidence, accept_test_looks=accept_test_looks)
    winner = next((experiment for candidate, experiment in contenders
                   if decision.selected is not None and candidate.pattern == decision.selected.pattern
                   and candidate.checkpoint == decision.selected.checkpoint), reference)
    pattern = None if decision.selected is None else winner.pattern(decision.selected.pattern)
    return Selection(**{
        **fields_for(decision.selected), "baseline": str(base), "max_degradation": max_degradation,
        "confidence": confidence, "pattern": str(pattern or base),
        **_decision_fields(decision, spending, confidence, test_tasks, confirmation),
        **_measured_fields(winner, reference, base, pattern, fresh_tasks, disjoint, test_seed,
                           timed_tasks, timed_rounds),
    })


def confirm_look(candidates: Sequence[CandidateTest], paired_differences: Callable[[CandidateTest], np.ndarray],
                 design: TaskDesign, look: Look, ledger: Ledger, *, max_degradation: float, confidence: float,
                 accept_test_looks: bool = False) -> tuple[Decision, Spending]:
    """One look at a test split: recorded, then the candidates tested at the error rate it may spend.

    The step ``select``, ``select --pattern`` and ``tune`` share (through
    :func:`confirm_candidates`); the error-rate simulations call it with
    fabricated differences.

    Args:
        candidates: Fastest first; the last is the anchor.
        paired_differences: A candidate's per-task differences to the baseline on the confirmation tasks.
        design: The confirmation tasks' design.
        look: The look, for the ledger.
        ledger: The looks at test splits of the storage.
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence across every look at the split.
        accept_test_looks: Confirm despite an earlier look that confirmed nothing.

    Raises:
        UsageError: An earlier look confirmed nothing and ``accept_test_looks`` is False.
    """
    spending = ledger.spend(look, confidence, accept_scored=accept_test_looks)
    decision = confirm_in_sequence(candidates, paired_differences, design, max_degradation=max_degradation,
                                   confidence=1.0 - spending.level)
    return decision, spending


def _validation_fields(study: str, choice: Choice, max_degradation: float, confidence: float) -> dict[str, Any]:
    return {"study": study, "baseline": str(measured(choice.baseline).pattern),
            "max_degradation": max_degradation, "confidence": confidence, "confirmed": False,
            "baseline_val_accuracy": float(measured(choice.baseline).accuracy),
            "mixed_devices": choice.mixed_devices}


def _trial_fields(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"pattern": str(measured(trial).pattern), "trial": trial.number,
            "val_accuracy": float(measured(trial).accuracy), "val_speedup": float(measured(trial).speedup)}


def _confirm(study: optuna.Study, choice: Choice, validation: dict[str, Any], ledger: Ledger, *,
             max_degradation: float,
             confidence: float, max_candidates: int, test_tasks: int, report_tasks: int, test_seed: int,
             data_root: str | os.PathLike[str] | None, checkpoint: str | os.PathLike[str] | None,
             baseline_checkpoint: str | os.PathLike[str] | None, device: str, timed_tasks: int,
             timed_rounds: int, accept_test_looks: bool) -> Selection:
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    ledger.refuse_scored(config.benchmark, accept_scored=accept_test_looks)  # before any data is read
    experiment = study_experiment(config, data_root=data_root, checkpoint=checkpoint, device=device,
                                  baseline_checkpoint=baseline_checkpoint)
    reference = experiment if baseline_checkpoint is None else experiment.with_checkpoint(baseline_checkpoint)
    validation_design = TaskDesign.of(experiment.benchmark.tasks("val", config.tasks, config.task_seed))
    candidates = study_candidates(study, validation_design, max_degradation=max_degradation, confidence=confidence,
                                  max_candidates=max_candidates)
    trials = {t.number: t for t in completed_trials(study)}

    def fields_for(selected: CandidateTest | None) -> dict[str, Any]:
        trial = choice.baseline if selected is None or selected.trial is None else trials[selected.trial]
        return {**validation, **_trial_fields(trial)}

    return confirm_candidates(
        reference, [(candidate, experiment) for candidate in candidates], max_degradation, fields_for=fields_for,
        ledger=ledger, command="select", baseline=str(measured(choice.baseline).pattern), confidence=confidence,
        test_tasks=test_tasks, report_tasks=report_tasks, test_seed=test_seed, timed_tasks=timed_tasks,
        timed_rounds=timed_rounds, accept_test_looks=accept_test_looks)


def _decision_fields(decision: Decision, spending: Spending, confidence: float, test_tasks: int,
                     confirmation: PairedScores) -> dict[str, Any]:
    return {"confirmed": decision.selected is not None, "reason": decision.reason,
            "candidates": tuple(asdict(c) for c in decision.candidates),
            "lower_bound": decision.selected.lower_bound if decision.selected else None,
            "confirmation_tasks": test_tasks, "confirmation_classes": confirmation.design.distinct_classes(),
            "look_number": spending.number, "look_level": spending.level,
            "look_note": spending.describe(confidence),
            "earlier_looks": tuple(look.describe() for look in spending.earlier), "covered": spending.covered}


def _measured_fields(experiment: Experiment, reference: Experiment, baseline: Pattern, pattern: Pattern | None,
                     fresh_tasks: Sequence[Task], disjoint: bool, test_seed: int, timed_tasks: int,
                     timed_rounds: int) -> dict[str, Any]:
    """Accuracies on the fresh report tasks and the latency next to the baseline (same model: same cost).

    ``pattern`` is the confirmed candidate (adapted on ``experiment``'s
    checkpoint), or None when the baseline is the answer.
    """
    fresh = [t.to(experiment.device) for t in fresh_tasks]
    report = PairedScores(experiment, reference, baseline, fresh)
    baseline_scores = report.baseline_scores()
    scores = baseline_scores if pattern is None else report.candidate_scores(pattern)
    pattern = baseline if pattern is None else pattern
    accuracy, baseline_accuracy = estimate(scores, report.design), estimate(baseline_scores, report.design)
    difference = estimate(scores - baseline_scores, report.design)
    timing = deployment_timing(experiment.model, pattern, baseline, experiment.inner_lr, experiment.benchmark.loss_fn,
                               fresh[:timed_tasks], experiment.device, repeats=timed_rounds)
    return {**_report_fields(accuracy, baseline_accuracy, difference), "classes_disjoint": disjoint,
            "latency_ms": timing.latency_ms, "baseline_latency_ms": timing.baseline_latency_ms,
            "speedup": timing.speedup, "adapt_predict_ms": timing.adapt_predict_ms,
            "baseline_adapt_predict_ms": timing.baseline_adapt_predict_ms,
            "adapt_predict_speedup": timing.adapt_predict_speedup, "query_batch": timing.query_batch,
            "timing_noise": timing.noise, "test_seed": test_seed, "device": device_name(experiment.device),
            "environment": environment(), "checkpoint": str(experiment.checkpoint_path),
            "baseline_checkpoint": str(reference.checkpoint_path)}


def _report_fields(accuracy: Estimate, baseline: Estimate, difference: Estimate) -> dict[str, Any]:
    return {"test_accuracy": accuracy.mean, "test_ci95": accuracy.ci95,
            "baseline_test_accuracy": baseline.mean, "baseline_test_ci95": baseline.ci95,
            "difference": difference.mean, "difference_ci95": difference.ci95,
            "test_tasks": accuracy.tasks, "test_classes": accuracy.classes, "test_units": accuracy.units}
