"""The multi-objective pattern search: study, selection, storage and the study's configuration."""

from ._config import (
    CONFIG_ATTR,
    ENVIRONMENT_ATTR,
    SELECTION_ATTR,
    TARGET_ATTR,
    TIME_METRICS,
    StudyConfig,
    pattern_study_names,
)
from ._confirming import confirm_candidates, confirm_look, confirm_pattern
from ._evaluation import BenchReport, Evaluation, bench_patterns, evaluate
from ._paired import PairedScores
from ._pareto import (
    SelectionError,
    ValidationChoice,
    baseline_trial,
    completed_trials,
    counts_toward_target,
    measured,
    pareto_trials,
    stopped_early,
    stopped_early_trials,
    validation_choice,
)
from ._record import ConfirmationEvidence, FreshReport, LookSpent, Selection, ValidationEvidence
from ._samplers import SAMPLERS, make_sampler
from ._selection import (
    proposals,
    resolve_study,
    select,
    study_candidates,
    study_experiment,
    study_front,
)
from ._settings import REPORT_TIMED_ROUNDS, REPORT_TIMED_TASKS, ConfirmationSettings
from ._space import DEFAULT_MAX_PHASES, LR_SCALES, SPACES, SearchSpace, flag_param, lr_param, steps_param
from ._storage import DEFAULT_HEARTBEAT_S, DEFAULT_STORAGE, StorageError, creation_lock, open_storage, safe_url
from ._study import default_study_name, fail_stale_trials, optimize
from ._summary import StudySummary, list_studies

__all__ = [
    "BenchReport",
    "Evaluation",
    "bench_patterns",
    "evaluate",
    "CONFIG_ATTR",
    "DEFAULT_MAX_PHASES",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_STORAGE",
    "ENVIRONMENT_ATTR",
    "LR_SCALES",
    "REPORT_TIMED_ROUNDS",
    "REPORT_TIMED_TASKS",
    "SAMPLERS",
    "SELECTION_ATTR",
    "SPACES",
    "TARGET_ATTR",
    "TIME_METRICS",
    "ValidationChoice",
    "ConfirmationEvidence",
    "FreshReport",
    "LookSpent",
    "ValidationEvidence",
    "ConfirmationSettings",
    "PairedScores",
    "Selection",
    "SearchSpace",
    "SelectionError",
    "StorageError",
    "StudyConfig",
    "StudySummary",
    "baseline_trial",
    "validation_choice",
    "completed_trials",
    "confirm_candidates",
    "confirm_look",
    "confirm_pattern",
    "counts_toward_target",
    "creation_lock",
    "default_study_name",
    "fail_stale_trials",
    "flag_param",
    "list_studies",
    "lr_param",
    "make_sampler",
    "measured",
    "open_storage",
    "optimize",
    "pareto_trials",
    "pattern_study_names",
    "proposals",
    "resolve_study",
    "safe_url",
    "select",
    "steps_param",
    "stopped_early",
    "stopped_early_trials",
    "study_candidates",
    "study_front",
    "study_experiment",
]
