"""``select``: choose the pattern, then confirm it against the baseline on fresh test tasks."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..checkpoint import file_checksum
from ..errors import UsageError
from ..experiment import Experiment, open_experiment
from ..scoring import mean_ci95
from ._config import CONFIG_ATTR, SELECTION_ATTR, StudyConfig
from ._evaluator import PatternEvaluator
from ._select import Choice, choose
from ._storage import DEFAULT_STORAGE, load_existing_study, open_storage
from ._study import default_study_name


@dataclass(frozen=True)
class Selection:
    """The selected pattern, its validation numbers and (when confirmed) its test numbers.

    Patterns are in explicit ``FLAGS:STEPS`` form. Accuracies are the
    benchmark's score. Test fields are None when confirmation was skipped.
    ``rejected`` lists faster candidates whose test accuracy fell below the
    baseline's minus the degradation (pattern, test accuracy, difference).
    """

    study: str
    pattern: str
    baseline: str
    max_degradation: float
    trial: int
    val_accuracy: float
    baseline_val_accuracy: float
    val_speedup: float
    mixed_devices: bool
    test_accuracy: float | None = None
    test_ci95: float | None = None
    baseline_test_accuracy: float | None = None
    baseline_test_ci95: float | None = None
    difference: float | None = None
    difference_ci95: float | None = None
    latency_ms: float | None = None
    baseline_latency_ms: float | None = None
    speedup: float | None = None
    test_tasks: int | None = None
    test_seed: int | None = None
    device: str | None = None
    rejected: tuple[dict[str, Any], ...] = ()

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


def select(
    max_degradation: float = 0.01,
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    confirm: bool = True,
    test_tasks: int = 600,
    test_seed: int = 0,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> Selection:
    """Selects the fastest Pareto pattern within ``max_degradation`` and confirms it on the test split.

    Candidates are the Pareto-optimal trials whose validation accuracy is at
    least the baseline's minus ``max_degradation``, fastest first. The first
    is scored with the baseline on fresh test tasks (paired); if its test
    accuracy is below the baseline's minus ``max_degradation``, it is recorded
    as rejected and the next candidate is tried, down to the baseline itself.
    The test split thus also gates the choice: after a rejection, the test
    numbers of the returned pattern are slightly optimistic.

    Args:
        max_degradation: Allowed accuracy loss against the baseline (0.01 = one point).
        storage: Optuna storage URL.
        study_name: Study (default: the only one in the storage, else the
            default study of ``optimize``, ``omniglot-small-conv4-5w1s``).
        confirm: Evaluate the selected pattern and the baseline on fresh test tasks.
        test_tasks: Number of test tasks.
        test_seed: Seed of the test tasks.
        data_root: Data folder.
        checkpoint: Checkpoint (default: the study configuration's default
            path); its checksum must match the study's.
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        UsageError: Missing study or trials, bad degradation, or another checkpoint.
    """
    if not 0.0 <= max_degradation <= 1.0:
        raise UsageError(f"--max-degradation must be between 0 and 1, got {max_degradation}")
    if test_tasks < 1:
        raise UsageError(f"--tasks must be at least 1, got {test_tasks}")
    study = resolve_study(storage, study_name)
    name = study.study_name
    choice = choose(study, max_degradation)
    if confirm:
        result = _confirm(choice, name, max_degradation, StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR]),
                          test_tasks, test_seed, data_root, checkpoint, device)
    else:
        result = _validation_only(choice, name, max_degradation, choice.selected)
    study.set_user_attr(SELECTION_ATTR, result.as_dict())
    return result


def _validation_only(choice: Choice, study: str, max_degradation: float, selected: FrozenTrial) -> Selection:
    baseline = choice.baseline
    return Selection(
        study=study, pattern=str(selected.user_attrs["pattern"]), baseline=str(baseline.user_attrs["pattern"]),
        max_degradation=max_degradation, trial=selected.number,
        val_accuracy=float(selected.user_attrs["accuracy"]),
        baseline_val_accuracy=float(baseline.user_attrs["accuracy"]),
        val_speedup=float(selected.user_attrs["speedup"]), mixed_devices=choice.mixed_devices,
    )


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


def _confirm(choice: Choice, study: str, max_degradation: float, config: StudyConfig, test_tasks: int,
             test_seed: int, data_root: str | os.PathLike[str] | None, checkpoint: str | os.PathLike[str] | None,
             device: str) -> Selection:
    experiment = study_experiment(config, data_root=data_root, checkpoint=checkpoint, device=device)
    baseline = experiment.pattern(str(choice.baseline.user_attrs["pattern"]))
    evaluator = PatternEvaluator(experiment, baseline, experiment.tasks("test", test_tasks, test_seed),
                                 latency_tasks=config.latency_tasks, repeats=max(config.repeats, 5))
    baseline_scores = evaluator.scorer.scores(baseline)
    baseline_mean, baseline_ci = mean_ci95(baseline_scores)
    rejected: list[dict[str, Any]] = []
    for trial in choice.candidates:
        pattern = experiment.pattern(str(trial.user_attrs["pattern"]))
        scores = evaluator.scorer.scores(pattern)
        difference, difference_ci = mean_ci95(scores - baseline_scores)
        if difference >= -max_degradation - 1e-12 or pattern == baseline:
            break
        rejected.append({"pattern": str(pattern), "test_accuracy": float(scores.mean()), "difference": difference})
    latency, _, baseline_latency = evaluator.latencies(pattern)
    accuracy, ci95 = mean_ci95(scores)
    return Selection(**{
        **_validation_only(choice, study, max_degradation, trial).as_dict(),
        "test_accuracy": accuracy, "test_ci95": ci95,
        "baseline_test_accuracy": baseline_mean, "baseline_test_ci95": baseline_ci,
        "difference": difference, "difference_ci95": difference_ci,
        "latency_ms": latency, "baseline_latency_ms": baseline_latency,
        "speedup": baseline_latency / max(latency, 1e-9), "test_tasks": test_tasks, "test_seed": test_seed,
        "device": evaluator.device_name, "rejected": tuple(rejected),
    })

