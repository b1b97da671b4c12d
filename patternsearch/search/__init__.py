"""The multi-objective pattern search: study, selection, storage and the study's configuration."""

from ._config import CONFIG_ATTR, ENVIRONMENT_ATTR, SELECTION_ATTR, TARGET_ATTR, TIME_METRICS, StudyConfig
from ._pareto import (
    Choice,
    SelectionError,
    baseline_trial,
    choose,
    completed_trials,
    counts_toward_target,
    measured,
    pareto_trials,
    stopped_early,
    stopped_early_trials,
)
from ._samplers import SAMPLERS, make_sampler
from ._selection import (
    PairedScores,
    Selection,
    confirm_pattern,
    decide,
    proposals,
    resolve_study,
    select,
    study_experiment,
)
from ._space import DEFAULT_MAX_PHASES, LR_SCALES, SPACES, SearchSpace, flag_param, lr_param, steps_param
from ._storage import DEFAULT_STORAGE, StorageError, open_storage, safe_url
from ._study import default_study_name, optimize
from ._summary import StudySummary, list_studies

__all__ = [
    "CONFIG_ATTR",
    "DEFAULT_MAX_PHASES",
    "DEFAULT_STORAGE",
    "ENVIRONMENT_ATTR",
    "LR_SCALES",
    "SAMPLERS",
    "SELECTION_ATTR",
    "SPACES",
    "TARGET_ATTR",
    "TIME_METRICS",
    "Choice",
    "PairedScores",
    "Selection",
    "SearchSpace",
    "SelectionError",
    "StorageError",
    "StudyConfig",
    "StudySummary",
    "baseline_trial",
    "choose",
    "completed_trials",
    "confirm_pattern",
    "counts_toward_target",
    "decide",
    "default_study_name",
    "flag_param",
    "list_studies",
    "lr_param",
    "make_sampler",
    "measured",
    "open_storage",
    "optimize",
    "pareto_trials",
    "proposals",
    "resolve_study",
    "safe_url",
    "select",
    "steps_param",
    "stopped_early",
    "stopped_early_trials",
    "study_experiment",
]
