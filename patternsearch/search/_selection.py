"""``select``: a study's candidates, proposed on its validation tasks, confirmed on test tasks.

Proposals come from every complete trial of the study (:func:`proposals`) and go through the rule of
:mod:`patternsearch.confirmation`; :mod:`._confirming` tests them on the test split and reports the answer on
fresh tasks that took no part in the decision.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import optuna

from ..checkpoint import CheckpointError, default_checkpoint_path, file_checksum, load_checkpoint
from ..confirmation import (
    DEFAULT_CANDIDATES,
    CandidateTest,
    Proposal,
    propose,
    validation_front,
)
from ..errors import UsageError
from ..experiment import Experiment, check_pairable, open_experiment
from ..looks import Ledger
from ..measurement import Measurement
from ..pattern import Pattern
from ..spec import ExperimentSpec
from ..uncertainty import TaskDesign
from ._config import CONFIG_ATTR, SELECTION_ATTR, StudyConfig, pattern_study_names
from ._confirming import confirm_candidates
from ._pareto import ValidationChoice, baseline_trial, completed_trials, measured, validation_choice
from ._record import Selection, ValidationEvidence
from ._settings import REPORT_TIMED_ROUNDS, REPORT_TIMED_TASKS, ConfirmationSettings
from ._storage import DEFAULT_STORAGE, load_existing_study, open_storage
from ._study import default_study_name


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
    settings = ConfirmationSettings(max_degradation, confidence, max_candidates, test_tasks, report_tasks, test_seed,
                                    timed_tasks, timed_rounds, accept_test_looks)
    study = resolve_study(storage, study_name)
    choice = validation_choice(study, max_degradation)
    if not confirm:
        fastest = choice.selected
        result = Selection(str(measured(fastest).pattern), str(measured(choice.baseline).pattern), max_degradation,
                           confidence, confirmed=False, validation=_validation(study.study_name, choice, fastest),
                           reason="validation only (--no-confirm): the fastest pattern within the degradation on "
                                  "validation, not confirmed")
    else:
        result = _confirm(study, choice, Ledger(open_storage(storage, create=False)), settings, data_root=data_root,
                          checkpoint=checkpoint, baseline_checkpoint=baseline_checkpoint, device=device)
    study.set_user_attr(SELECTION_ATTR, result.to_dict())
    return result


def _validation(study: str, choice: ValidationChoice, trial: optuna.trial.FrozenTrial) -> ValidationEvidence:
    """What the study's validation said of ``trial`` and of the baseline."""
    return ValidationEvidence(study, trial.number, float(measured(trial).accuracy),
                              float(measured(choice.baseline).accuracy), float(measured(trial).speedup),
                              choice.mixed_devices)


def _confirm(study: optuna.Study, choice: ValidationChoice, ledger: Ledger,
             settings: ConfirmationSettings, *, data_root: str | os.PathLike[str] | None,
             checkpoint: str | os.PathLike[str] | None, baseline_checkpoint: str | os.PathLike[str] | None,
             device: str) -> Selection:
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = study_experiment(config, data_root=data_root, checkpoint=checkpoint, device=device,
                                  baseline_checkpoint=baseline_checkpoint)
    reference = experiment.with_checkpoint(baseline_checkpoint)
    validation_design = TaskDesign.of(experiment.benchmark.tasks("val", config.tasks, config.task_seed))
    candidates = study_candidates(study, validation_design, max_degradation=settings.max_degradation,
                                  confidence=settings.confidence, max_candidates=settings.max_candidates)
    trials = {t.number: t for t in completed_trials(study)}

    def validation_for(selected: CandidateTest | None) -> ValidationEvidence:
        trial = choice.baseline if selected is None or selected.trial is None else trials[selected.trial]
        return _validation(study.study_name, choice, trial)

    return confirm_candidates(
        reference, [(candidate, experiment) for candidate in candidates], settings, validation_for=validation_for,
        ledger=ledger, command="select", baseline=str(measured(choice.baseline).pattern))
