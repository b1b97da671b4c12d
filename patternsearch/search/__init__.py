"""The multi-objective pattern search: study, evaluator, selection and storage."""

from ._config import StudyConfig
from ._confirm import Selection, select
from ._evaluator import Measurement, PatternEvaluator
from ._samplers import SAMPLERS, make_sampler
from ._select import Choice, SelectionError, choose, pareto_trials
from ._storage import DEFAULT_STORAGE, StorageError, open_storage, safe_url
from ._study import default_study_name, optimize
from ._summary import StudySummary, list_studies

__all__ = [
    "DEFAULT_STORAGE",
    "SAMPLERS",
    "Choice",
    "Measurement",
    "PatternEvaluator",
    "Selection",
    "SelectionError",
    "StorageError",
    "StudyConfig",
    "StudySummary",
    "choose",
    "default_study_name",
    "list_studies",
    "make_sampler",
    "open_storage",
    "optimize",
    "pareto_trials",
    "safe_url",
    "select",
]
