"""Summaries of the studies in a storage (``patternsearch studies``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from ._config import CONFIG_ATTR, TARGET_ATTR, pattern_study_names
from ._pareto import SelectionError, baseline_trial, completed_trials, measured, stopped_early_trials
from ._storage import DEFAULT_STORAGE, open_storage
from ._study import best_speedup_within


@dataclass(frozen=True)
class StudySummary:
    """One line of ``patternsearch studies``."""

    name: str
    benchmark: str | None
    model: str | None
    complete: int
    stopped_early: int
    target: int | None
    baseline_accuracy: float | None
    best_speedup_within_1pt: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def summarize(study: optuna.Study) -> StudySummary:
    """The summary line of one study."""
    config = study.user_attrs.get(CONFIG_ATTR, {})
    try:
        baseline: float | None = measured(baseline_trial(study)).accuracy
    except SelectionError:
        baseline = None
    return StudySummary(
        name=study.study_name, benchmark=config.get("benchmark"), model=config.get("model"),
        complete=len(completed_trials(study)), stopped_early=len(stopped_early_trials(study)),
        target=study.user_attrs.get(TARGET_ATTR),
        baseline_accuracy=baseline, best_speedup_within_1pt=best_speedup_within(study, 0.01),
    )


def list_studies(storage: str = DEFAULT_STORAGE) -> list[StudySummary]:
    """Summaries of every pattern study in the storage, by name."""
    rdb = open_storage(storage, create=False)
    return [summarize(optuna.load_study(study_name=name, storage=rdb)) for name in pattern_study_names(rdb)]
