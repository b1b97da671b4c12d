"""What a report says: the answer ``select`` stored, the study's trials, the per-step table, the importances."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..errors import RecordError
from ..measurement import CachedScorer
from ..pattern import Pattern
from ..search import (
    SELECTION_ATTR,
    Selection,
    StudyConfig,
    ValidationChoice,
    completed_trials,
    measured,
    study_experiment,
)
from ..uncertainty import TaskDesign, estimate


@dataclass(frozen=True)
class TrialRow:
    """A trial as the report's tables show it (validation accuracy, the study's timing)."""

    trial: int
    pattern: str
    val_accuracy: float
    val_ci95: float
    latency_ms: float
    val_speedup: float
    flops: float

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRow:
        """The row of one of the study's trials."""
        record = measured(trial)
        return cls(trial.number, record.pattern, record.accuracy, record.ci95, record.latency_ms, record.speedup,
                   record.flops)


@dataclass(frozen=True)
class StepRow:
    """For one inner-step count: the most accurate pattern and full MAML at that count (validation)."""

    steps: int
    best_pattern: str | None
    best_val_accuracy: float | None
    best_val_speedup: float | None
    full_val_accuracy: float | None
    full_val_ci95: float | None


def unique(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if "repeat_of" not in t.user_attrs]


def full_by_steps(study: optuna.Study, config: StudyConfig, *, data_root: str | os.PathLike[str] | None,
                  checkpoint: str | os.PathLike[str] | None, device: str) -> dict[int, dict[str, float]]:
    """Accuracy of full MAML at every step count on the study's validation tasks.

    Patterns the study evaluated are read from it; the others are scored on
    the same tasks (the study itself is never written).

    Raises:
        PatternsearchError: When a step count is missing and the data or the
            checkpoint cannot be loaded.
    """
    known: dict[int, dict[str, float]] = {}
    groups = len(config.groups)
    for trial in unique(completed_trials(study)):
        pattern = Pattern.parse(measured(trial).pattern)
        if pattern == Pattern.full(groups, pattern.steps) and pattern.steps > 0:
            known[pattern.steps] = {"accuracy": measured(trial).accuracy, "ci95": measured(trial).ci95}
    missing = [s for s in range(1, config.max_steps + 1) if s not in known]
    if missing:
        experiment = study_experiment(config, data_root=data_root, checkpoint=checkpoint, device=device)
        tasks = experiment.tasks("val", config.tasks, config.task_seed)
        scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
        for steps in missing:
            accuracy = estimate(scorer.scores(Pattern.full(groups, steps)), TaskDesign.of(tasks))
            known[steps] = {"accuracy": accuracy.mean, "ci95": accuracy.ci95}
    return dict(sorted(known.items()))


def per_step_table(study: optuna.Study, full: dict[int, dict[str, float]]) -> list[StepRow]:
    """For each step count, the most accurate pattern next to full MAML at that step count (validation)."""
    best: dict[int, FrozenTrial] = {}
    for trial in unique(completed_trials(study)):
        steps = Pattern.parse(measured(trial).pattern).steps
        if steps and (steps not in best or measured(trial).accuracy > measured(best[steps]).accuracy):
            best[steps] = trial
    rows = []
    for steps in sorted(set(best) | set(full)):
        trial = best.get(steps)
        rows.append(StepRow(
            steps,
            measured(trial).pattern if trial else None,
            measured(trial).accuracy if trial else None,
            measured(trial).speedup if trial else None,
            full.get(steps, {}).get("accuracy"),
            full.get(steps, {}).get("ci95"),
        ))
    return rows


def importances(study: optuna.Study, config: StudyConfig) -> dict[str, dict[str, float]]:
    """The fANOVA importance of each trial parameter (flags, steps, ...) for accuracy and for time.

    Every trial of a study has the same parameters (a later phase that is
    absent has ``pk_steps`` 0, see :class:`~patternsearch.search.SearchSpace`),
    so each parameter is ranked; the names are the space's labels.
    """
    names = config.search_space().labels(list(config.groups))
    result: dict[str, dict[str, float]] = {}
    for label, index in (("accuracy", 1), ("time", 0)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(
                    study, target=lambda t, i=index: t.values[i],
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                )
        except (RuntimeError, ValueError):
            values = {}
        result[label] = {names.get(k, k): float(v) for k, v in values.items()}
    return result


def headline(selection: Selection | None, choice: ValidationChoice) -> dict[str, Any]:
    """The report's answer: ``select``'s stored selection, or a labelled validation estimate when select has not run.

    Args:
        selection: What ``select`` stored in the study, or None.
        choice: The validation choice at the report's budget (used only when select has not run).

    Returns:
        ``pattern``, ``source`` (``select``, ``select --no-confirm`` or
        ``validation``), ``confirmed``, ``speedup`` (select's held-out timing,
        else None) and ``text``, one sentence for the page and the terminal.
    """
    if selection is None:
        fastest = measured(choice.selected)
        return {"pattern": fastest.pattern, "source": "validation", "confirmed": False, "speedup": None,
                "text": "select has not been run on this study, so no pattern is confirmed yet: run 'patternsearch "
                        "select' with the same --storage and --study (it tests the candidates on held-out test "
                        "tasks and times them). Validation estimate until then: "
                        f"{fastest.pattern}, estimated speedup {fastest.speedup:.1f}x (validation)."}
    pattern = selection.pattern
    if selection.timing is None or selection.confirmation is None:
        return {"pattern": pattern, "source": "select --no-confirm", "confirmed": False, "speedup": None,
                "text": f"select ran with --no-confirm: {pattern} is a validation estimate, not confirmed "
                        f"(estimated speedup {selection.validation.speedup or 1.0:.1f}x, validation); run "
                        "'patternsearch select' without --no-confirm to test it on held-out test tasks."}
    budget = f"{selection.max_degradation:g} of {selection.baseline}"
    if selection.confirmed:
        text = (f"Selected: {pattern}, confirmed within {budget} at {selection.confidence:g} confidence "
                f"(lower bound of the paired accuracy difference {selection.confirmation.lower_bound:+.4f}); "
                f"speedup {selection.timing.speedup:.1f}x (held-out timing, {selection.device}); adapt + predict "
                f"{selection.timing.adapt_predict_speedup:.1f}x.")
    else:
        text = (f"Selected: {pattern}, the baseline: no faster pattern was confirmed within {budget} at "
                f"{selection.confidence:g} confidence ({selection.reason}).")
    return {"pattern": pattern, "source": "select", "confirmed": selection.confirmed,
            "speedup": selection.timing.speedup, "text": text}


def stored_selection(study: optuna.Study) -> tuple[Selection | None, str | None]:
    """What ``select`` stored in the study, and a note when it cannot be read (another version's record)."""
    stored = study.user_attrs.get(SELECTION_ATTR)
    if stored is None:
        return None, None
    try:
        return Selection.from_dict(stored, what=f"the selection stored in study {study.study_name!r}",
                                   remedy="run 'patternsearch select' again to store a new one"), None
    except RecordError as error:
        return None, str(error)


