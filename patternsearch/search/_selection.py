"""``select``: choose candidates on validation, confirm one on test tasks, report it on fresh ones.

The promise: the selected pattern's accuracy is within ``max_degradation``
(D) of the baseline's, with probability at least ``confidence``. The
procedure:

1. **Validation** (the study's tasks) proposes candidates: the Pareto
   patterns faster than the baseline whose paired validation difference has
   a lower ``confidence`` bound of at least ``-D`` (a pattern that barely
   passes on validation would rarely be confirmed); of those, the
   ``max_candidates`` fastest. The list is fixed before any test task is
   scored.
2. **Confirmation tasks** decide, by fixed-sequence testing. The candidates
   are tested in order of validation speed, slowest (on a Pareto front: most
   accurate) first, each paired with the baseline on the same tasks, and
   confirmed when the one-sided ``confidence`` lower bound of its accuracy
   difference is at least ``-D``. Testing stops at the first candidate that
   is not confirmed; the fastest confirmed one is selected, and when none is,
   the baseline is the answer. Because a candidate is tested only after
   every earlier one was confirmed, the probability of confirming any
   pattern whose true loss exceeds D is at most ``1 - confidence`` (strong
   family-wise control of the fixed-sequence procedure), however many
   candidates there are and whatever their true losses.
3. **Report tasks**, drawn from the other half of the test split's classes
   when the benchmark exposes them, took no part in the decision: the
   selected pattern's and the baseline's accuracies printed by ``select``
   come from them and are unbiased.

Intervals account for tasks that share classes (:mod:`patternsearch.uncertainty`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import optuna

from ..benchmarks import Task, disjoint_task_sets
from ..checkpoint import file_checksum
from ..errors import UsageError
from ..experiment import Experiment, open_experiment
from ..measurement import CachedScorer, PatternEvaluator, environment
from ..pattern import Pattern
from ..uncertainty import Estimate, TaskDesign, estimate
from ._config import CONFIG_ATTR, SELECTION_ATTR, StudyConfig
from ._pareto import Choice, choose
from ._storage import DEFAULT_STORAGE, load_existing_study, open_storage
from ._study import default_study_name


class TaskScores(Protocol):
    """Per-task scores of patterns on one fixed task list, and that list's design."""

    design: TaskDesign

    def scores(self, pattern: Pattern) -> np.ndarray:
        """Scores of ``pattern`` on every task, in task order."""
        ...


@dataclass(frozen=True)
class CandidateTest:
    """One candidate of the selection and what the confirmation tasks said of it.

    Attributes:
        pattern: The pattern's text.
        trial: Its trial in the study (None for a pattern given to
            :func:`confirm_pattern`, as are the validation fields).
        val_difference: Validation accuracy minus the baseline's.
        val_speedup: Speedup over the baseline measured in the study.
        test_difference: Mean paired difference on the confirmation tasks
            (None when testing stopped before this candidate).
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
    """The outcome of the confirmation: every candidate's test and the selected one (None: the baseline)."""

    candidates: tuple[CandidateTest, ...]
    selected: CandidateTest | None
    reason: str


def validation_candidates(choice: Choice, design: TaskDesign, *, max_degradation: float, confidence: float,
                          max_candidates: int) -> list[CandidateTest]:
    """The fastest Pareto patterns whose validation lower bound is at least ``-max_degradation`` (step 1 above).

    Args:
        choice: Pareto patterns within the degradation on validation (point
            estimates), fastest first, and the baseline.
        design: The study's validation tasks.
        max_degradation: D, in accuracy units.
        confidence: Level of the validation lower bound.
        max_candidates: At most this many are returned.
    """
    baseline = choice.baseline
    base_scores = np.asarray(baseline.user_attrs.get("scores", ()), dtype=np.float64)
    candidates = []
    for trial in choice.candidates:
        if trial.user_attrs["pattern"] == baseline.user_attrs["pattern"] or len(candidates) == max_candidates:
            continue
        scores = np.asarray(trial.user_attrs.get("scores", ()), dtype=np.float64)
        if scores.size and scores.size == base_scores.size:
            paired = estimate(scores - base_scores, design if design.units is None or
                              len(design.units) == scores.size else TaskDesign.none())
            if paired.lower_bound(confidence) < -max_degradation:
                continue
        candidates.append(CandidateTest(
            pattern=str(trial.user_attrs["pattern"]), trial=trial.number,
            val_difference=float(trial.user_attrs["accuracy"]) - float(baseline.user_attrs["accuracy"]),
            val_speedup=float(trial.user_attrs["speedup"])))
    return candidates


def decide(
    choice: Choice,
    validation: TaskDesign,
    confirmation: TaskScores,
    *,
    max_degradation: float,
    confidence: float = 0.95,
    max_candidates: int = 5,
) -> Decision:
    """Proposes candidates on validation and tests them on the confirmation tasks (steps 1 and 2 above).

    Args:
        choice: Pareto patterns within D on validation (fastest first) and the baseline.
        validation: The design of the study's validation tasks.
        confirmation: Scores on the confirmation tasks.
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence of the whole procedure.
        max_candidates: The most candidates tested.
    """
    tests = validation_candidates(choice, validation, max_degradation=max_degradation, confidence=confidence,
                                  max_candidates=max_candidates)
    if not tests:
        return Decision((), None, f"no Pareto pattern faster than the baseline has a validation lower bound "
                                  f"within {max_degradation:g}; the baseline is the answer")
    return confirm_in_sequence(tests, Pattern.parse(str(choice.baseline.user_attrs["pattern"])), confirmation,
                               max_degradation=max_degradation, confidence=confidence)


def confirm_in_sequence(tests: Sequence[CandidateTest], baseline: Pattern, confirmation: TaskScores, *,
                        max_degradation: float, confidence: float) -> Decision:
    """Fixed-sequence testing of candidates (fastest first) against the baseline (step 2 above).

    Args:
        tests: The candidates, fastest first; tested slowest first.
        baseline: The baseline pattern.
        confirmation: Scores on the confirmation tasks (the baseline's may
            come from another checkpoint).
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence.
    """
    tests = list(tests)
    baseline_scores = confirmation.scores(baseline)
    tests.reverse()  # slowest (most accurate on validation) first
    selected = None
    for i, test in enumerate(tests):
        difference = estimate(confirmation.scores(Pattern.parse(test.pattern)) - baseline_scores,
                              confirmation.design)
        bound = difference.lower_bound(confidence)
        tests[i] = CandidateTest(**{**asdict(test), "test_difference": difference.mean, "lower_bound": bound,
                                    "confirmed": bound >= -max_degradation})
        if not tests[i].confirmed:
            break
        selected = tests[i]
    tests.reverse()  # fastest first again
    if selected is None:
        return Decision(tuple(tests), None, f"the first candidate tested, {tests[-1].pattern}, has lower bound "
                                            f"{tests[-1].lower_bound:+.4f} < -{max_degradation:g}; the baseline is "
                                            "the answer")
    return Decision(tuple(tests), selected, f"the fastest confirmed candidate: lower bound "
                                            f"{selected.lower_bound:+.4f} >= -{max_degradation:g}")


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
        lower_bound: One-sided ``confidence`` lower bound of the selected
            pattern's paired difference on the confirmation tasks.
        candidates: Every candidate, its validation and confirmation numbers.
        confirmation_tasks, confirmation_classes: What the decision rests on.
        test_accuracy, baseline_test_accuracy, difference: On the report
            tasks, which took no part in the decision, with 95% half-widths.
        test_tasks, test_classes: What those rest on.
        classes_disjoint: Whether report and confirmation tasks share no class.
        checkpoint, baseline_checkpoint: The checkpoints the pattern and the
            baseline adapted (they differ when a specialized checkpoint is
            compared with its parent).

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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


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
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError("the storage holds no study; run 'patternsearch optimize' first")
    default = default_study_name("omniglot-small", "conv4", 5, 1)
    if default in names:
        return default
    raise UsageError(f"the storage holds several studies ({', '.join(sorted(names))}); name one with --study")


def study_experiment(config: StudyConfig, *, data_root: str | os.PathLike[str] | None,
                     checkpoint: str | os.PathLike[str] | None, device: str) -> Experiment:
    """Re-opens the experiment a study was made with.

    Raises:
        UsageError: If the checkpoint is not the study's (checksums differ).
    """
    experiment = open_experiment(
        config.benchmark, config.model, ways=config.ways, shots=config.shots, queries=config.queries,
        data_root=data_root, benchmark_options=config.benchmark_options, checkpoint=checkpoint, device=device,
    )
    checksum = file_checksum(experiment.checkpoint_path)
    if checksum != config.checkpoint_sha256:
        raise UsageError(f"checkpoint {experiment.checkpoint_path} (sha256 {checksum[:12]}...) is not the one the "
                         f"study was made with (sha256 {config.checkpoint_sha256[:12]}...); pass --checkpoint")
    return experiment


class _ScoredTasks:
    """A task list scored with the one scorer, with the list's design.

    With a ``reference`` experiment, the ``baseline`` pattern adapts that
    experiment's model (on the same tasks, so differences stay paired).
    """

    def __init__(self, experiment: Experiment, tasks: Sequence[Task], reference: Experiment | None = None,
                 baseline: Pattern | None = None) -> None:
        self.scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
        self.reference = None if reference is None or reference is experiment else CachedScorer(
            reference.model, reference.benchmark, tasks, reference.inner_lr)
        self.baseline = baseline
        self.design = TaskDesign.of(tasks)

    def scores(self, pattern: Pattern) -> np.ndarray:
        if self.reference is not None and pattern == self.baseline:
            return self.reference.scores(pattern)
        return self.scorer.scores(pattern)


def select(
    max_degradation: float = 0.01,
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    confirm: bool = True,
    confidence: float = 0.95,
    max_candidates: int = 5,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    baseline_checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> Selection:
    """Selects the fastest pattern confirmed within ``max_degradation`` of the baseline (see the module doc).

    Args:
        max_degradation: Allowed accuracy loss against the baseline (0.01 = one point).
        storage: Optuna storage URL.
        study_name: Study (default: the only one in the storage, else the
            default study of ``optimize``, ``omniglot-small-conv4-5w1s``).
        confirm: Confirm on test tasks; without it the fastest validation
            candidate is returned unconfirmed.
        confidence: Probability that a selected pattern is truly within D.
        max_candidates: Most candidates tested (the fastest that validation proposes).
        test_tasks: Confirmation tasks.
        report_tasks: Report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks and of the class halves.
        data_root: Data folder.
        checkpoint: Checkpoint (default: the study configuration's default
            path); its checksum must match the study's.
        baseline_checkpoint: Adapt the baseline on this checkpoint on the
            test tasks (e.g. the parent of a specialized checkpoint).
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        UsageError: Missing study or trials, bad arguments, or another checkpoint.
    """
    report_tasks = _check_arguments(max_degradation, confidence, max_candidates, test_tasks, report_tasks)
    study = resolve_study(storage, study_name)
    choice = choose(study, max_degradation)
    validation = _validation_fields(study.study_name, choice, max_degradation, confidence)
    if not confirm:
        fastest = choice.selected
        result = Selection(**{**validation, **_trial_fields(fastest),
                              "reason": "validation only (--no-confirm): the fastest pattern within the "
                                        "degradation on validation, not confirmed"})
    else:
        result = _confirm(study, choice, validation, max_degradation=max_degradation, confidence=confidence,
                          max_candidates=max_candidates, test_tasks=test_tasks, report_tasks=report_tasks,
                          test_seed=test_seed, data_root=data_root, checkpoint=checkpoint,
                          baseline_checkpoint=baseline_checkpoint, device=device)
    study.set_user_attr(SELECTION_ATTR, result.as_dict())
    return result


def _check_arguments(max_degradation: float, confidence: float, max_candidates: int, test_tasks: int,
                     report_tasks: int | None) -> int:
    """Validates select's numbers; returns the report task count."""
    if not 0.0 <= max_degradation <= 1.0:
        raise UsageError(f"--max-degradation must be between 0 and 1, got {max_degradation}")
    if not 0.5 <= confidence < 1.0:
        raise UsageError(f"--confidence must be in [0.5, 1), got {confidence}")
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
    baseline: str = "full",
    baseline_checkpoint: str | os.PathLike[str] | None = None,
    confidence: float = 0.95,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    latency_tasks: int = 2,
    repeats: int = 5,
) -> Selection:
    """Confirms one given pattern against the baseline with the selection's rule, without a study.

    For a pattern chosen elsewhere, typically a specialized checkpoint's
    pattern against full MAML on its parent (``baseline_checkpoint``): the
    pattern is confirmed when the one-sided ``confidence`` lower bound of its
    paired difference on the confirmation tasks is at least ``-D``, and its
    accuracies are then measured on fresh report tasks (see the module doc).

    Args:
        experiment: Benchmark, checkpoint and model the pattern adapts.
        pattern: The pattern's text.
        max_degradation: D, in accuracy units.
        baseline: The baseline's text (default ``full``, of the baseline's checkpoint).
        baseline_checkpoint: Checkpoint the baseline adapts (default: the same).
        confidence: Probability that a confirmed pattern is truly within D.
        test_tasks: Confirmation tasks.
        report_tasks: Report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks and of the class halves.
        latency_tasks: Tasks timed.
        repeats: Timed rounds.

    Raises:
        UsageError: Bad arguments.
        CheckpointError: A baseline checkpoint of another benchmark or model.
    """
    report_tasks = _check_arguments(max_degradation, confidence, 1, test_tasks, report_tasks)
    reference = experiment if baseline_checkpoint is None else experiment.with_checkpoint(baseline_checkpoint)
    base, candidate = reference.pattern(baseline), experiment.pattern(pattern)
    decision_tasks, fresh_tasks, disjoint = disjoint_task_sets(experiment.benchmark, "test", test_tasks,
                                                               report_tasks, test_seed)
    confirmation = _ScoredTasks(experiment, [t.to(experiment.device) for t in decision_tasks], reference, base)
    decision = confirm_in_sequence([CandidateTest(str(candidate), None, None, None)], base, confirmation,
                                   max_degradation=max_degradation, confidence=confidence)
    selected = candidate if decision.selected is not None else base
    return Selection(**{
        "study": None, "baseline": str(base), "max_degradation": max_degradation, "confidence": confidence,
        "mixed_devices": False, "pattern": str(selected), "trial": None, "val_accuracy": None,
        "baseline_val_accuracy": None, "val_speedup": None,
        **_decision_fields(decision, test_tasks, confirmation),
        **_measured_fields(experiment, reference, base, selected, fresh_tasks, disjoint, test_seed,
                           latency_tasks, repeats),
    })


def _validation_fields(study: str, choice: Choice, max_degradation: float, confidence: float) -> dict[str, Any]:
    return {"study": study, "baseline": str(choice.baseline.user_attrs["pattern"]),
            "max_degradation": max_degradation, "confidence": confidence, "confirmed": False,
            "baseline_val_accuracy": float(choice.baseline.user_attrs["accuracy"]),
            "mixed_devices": choice.mixed_devices}


def _trial_fields(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"pattern": str(trial.user_attrs["pattern"]), "trial": trial.number,
            "val_accuracy": float(trial.user_attrs["accuracy"]), "val_speedup": float(trial.user_attrs["speedup"])}


def _confirm(study: optuna.Study, choice: Choice, validation: dict[str, Any], *, max_degradation: float,
             confidence: float, max_candidates: int, test_tasks: int, report_tasks: int, test_seed: int,
             data_root: str | os.PathLike[str] | None, checkpoint: str | os.PathLike[str] | None,
             baseline_checkpoint: str | os.PathLike[str] | None, device: str) -> Selection:
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = study_experiment(config, data_root=data_root, checkpoint=checkpoint, device=device)
    reference = experiment if baseline_checkpoint is None else experiment.with_checkpoint(baseline_checkpoint)
    baseline = reference.pattern(str(choice.baseline.user_attrs["pattern"]))
    decision_tasks, fresh_tasks, disjoint = disjoint_task_sets(experiment.benchmark, "test", test_tasks,
                                                               report_tasks, test_seed)
    validation_design = TaskDesign.of(experiment.benchmark.tasks("val", config.tasks, config.task_seed))
    confirmation = _ScoredTasks(experiment, [t.to(experiment.device) for t in decision_tasks], reference, baseline)
    decision = decide(choice, validation_design, confirmation, max_degradation=max_degradation, confidence=confidence,
                      max_candidates=max_candidates)
    selected = next((t for t in choice.candidates if decision.selected is not None
                     and t.number == decision.selected.trial), choice.baseline)
    pattern = experiment.pattern(str(selected.user_attrs["pattern"]))
    return Selection(**{
        **validation, **_trial_fields(selected), **_decision_fields(decision, test_tasks, confirmation),
        **_measured_fields(experiment, reference, baseline, pattern, fresh_tasks, disjoint, test_seed,
                           config.latency_tasks, max(config.repeats, 5)),
    })


def _decision_fields(decision: Decision, test_tasks: int, confirmation: _ScoredTasks) -> dict[str, Any]:
    return {"confirmed": decision.selected is not None, "reason": decision.reason,
            "candidates": tuple(asdict(c) for c in decision.candidates),
            "lower_bound": decision.selected.lower_bound if decision.selected else None,
            "confirmation_tasks": test_tasks, "confirmation_classes": confirmation.design.distinct_classes()}


def _measured_fields(experiment: Experiment, reference: Experiment, baseline: Pattern, pattern: Pattern,
                     fresh_tasks: Sequence[Task], disjoint: bool, test_seed: int, latency_tasks: int,
                     repeats: int) -> dict[str, Any]:
    """Accuracies on the fresh report tasks and the latency next to the baseline (same model: same cost)."""
    fresh = [t.to(experiment.device) for t in fresh_tasks]
    report = _ScoredTasks(experiment, fresh, reference, baseline)
    baseline_scores, scores = report.scores(baseline), report.scores(pattern)
    accuracy, baseline_accuracy = estimate(scores, report.design), estimate(baseline_scores, report.design)
    difference = estimate(scores - baseline_scores, report.design)
    timer = PatternEvaluator(experiment, baseline, fresh[:latency_tasks], latency_tasks=latency_tasks,
                             repeats=repeats)
    timing = timer.latencies(pattern)
    return {**_report_fields(accuracy, baseline_accuracy, difference), "classes_disjoint": disjoint,
            "latency_ms": timing.latency_ms, "baseline_latency_ms": timing.baseline_ms,
            "speedup": 1.0 / max(timing.ratio, 1e-12), "test_seed": test_seed, "device": timer.device_name,
            "environment": environment(), "checkpoint": str(experiment.checkpoint_path),
            "baseline_checkpoint": str(reference.checkpoint_path)}


def _report_fields(accuracy: Estimate, baseline: Estimate, difference: Estimate) -> dict[str, Any]:
    return {"test_accuracy": accuracy.mean, "test_ci95": accuracy.ci95,
            "baseline_test_accuracy": baseline.mean, "baseline_test_ci95": baseline.ci95,
            "difference": difference.mean, "difference_ci95": difference.ci95,
            "test_tasks": accuracy.tasks, "test_classes": accuracy.classes, "test_units": accuracy.units}
