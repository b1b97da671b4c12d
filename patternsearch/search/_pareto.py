"""Choosing a pattern from a study: the fastest Pareto point within the allowed degradation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..confirmation import check_promise
from ..errors import SelectionError
from ..measurement import Measurement
from ._config import CONFIG_ATTR


def measured(trial: FrozenTrial) -> Measurement:
    """The typed view of a measured trial: its :class:`~patternsearch.measurement.Measurement`.

    Every reader of a study goes through this, so each quantity has one name
    and one definition (``speedup`` is always ``1 / latency_ratio``).
    """
    return Measurement.from_attrs(trial.user_attrs)


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's complete trials, in trial order."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def stopped_early(trial: FrozenTrial) -> bool:
    """True for a trial pruned because a faster trial was surely more accurate."""
    return trial.state == TrialState.PRUNED and trial.user_attrs.get("dominated_by") is not None


def counts_toward_target(trial: FrozenTrial) -> bool:
    """True for a complete trial or one stopped early (not for a surplus or failed one)."""
    return trial.state == TrialState.COMPLETE or stopped_early(trial)


def stopped_early_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials stopped early (their user attributes hold partial scores), in trial order."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if stopped_early(t)]


def baseline_trial(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> FrozenTrial:
    """The first complete trial of the study's baseline pattern.

    Raises:
        SelectionError: If the baseline has no complete trial yet.
    """
    baseline = study.user_attrs.get(CONFIG_ATTR, {}).get("baseline")
    for trial in trials if trials is not None else completed_trials(study):
        if measured(trial).pattern == baseline:
            return trial
    raise SelectionError(f"study {study.study_name!r} has no complete baseline trial ({baseline}) yet")


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal complete trials, one per pattern, fastest first."""
    unique: dict[str, FrozenTrial] = {}
    for trial in study.best_trials:
        unique.setdefault(str(measured(trial).pattern), trial)
    return sorted(unique.values(), key=lambda t: (t.values[0], -t.values[1]))


def devices(trials: list[FrozenTrial]) -> list[str]:
    """The distinct devices the trials were measured on."""
    return sorted({str(measured(t).device) for t in trials})


@dataclass(frozen=True)
class ValidationChoice:
    """The qualifying trials, fastest first, and the baseline trial they are compared with.

    Attributes:
        candidates: Pareto-optimal trials within the degradation, fastest
            first, ending with the baseline (which always qualifies).
        baseline: The baseline trial.
        threshold: Baseline validation accuracy minus the degradation.
        mixed_devices: Whether the study's latencies come from several devices.
    """

    candidates: tuple[FrozenTrial, ...]
    baseline: FrozenTrial
    threshold: float
    mixed_devices: bool

    @property
    def selected(self) -> FrozenTrial:
        """The fastest qualifying trial."""
        return self.candidates[0]


def validation_choice(study: optuna.Study, max_degradation: float) -> ValidationChoice:
    """Pareto-optimal trials whose accuracy is at least baseline minus ``max_degradation``, fastest first.

    Speed is the study's time objective; when latencies were measured in
    milliseconds on different devices, patterns are compared by their speedup
    over the baseline measured on the same device instead (with a warning).
    The baseline always qualifies, so there is always an answer.

    Raises:
        UsageError: Bad degradation.
        SelectionError: No complete baseline trial.
    """
    check_promise(max_degradation)
    trials = completed_trials(study)
    if not trials:
        raise SelectionError(f"study {study.study_name!r} has no completed trial")
    baseline = baseline_trial(study, trials)
    threshold = float(measured(baseline).accuracy) - max_degradation
    mixed = len(devices(trials)) > 1
    metric = study.user_attrs.get(CONFIG_ATTR, {}).get("time_metric", "ratio")
    if mixed:
        warnings.warn(
            f"latencies of study {study.study_name!r} come from several devices ({', '.join(devices(trials))}); "
            "patterns are compared by their speedup over the baseline on the same device",
            stacklevel=2,
        )
    by_speedup = mixed and metric == "latency"
    qualifying = [t for t in pareto_trials(study) if float(measured(t).accuracy) >= threshold - 1e-12]

    def speed_key(trial: FrozenTrial) -> tuple[float, float]:
        cost = -float(measured(trial).speedup) if by_speedup else float(trial.values[0])
        return cost, -float(measured(trial).accuracy)

    ordered = sorted((t for t in qualifying if measured(t).pattern != measured(baseline).pattern),
                     key=speed_key)
    faster = [t for t in ordered if speed_key(t) <= speed_key(baseline)]
    return ValidationChoice((*faster, baseline), baseline, threshold, mixed)
