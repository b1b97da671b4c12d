"""``tune``: from a checkpoint to its fastest confirmed adaptation (search, specialize, confirm), resumable."""

from ._plan import DEFAULT_MARGIN, Plan, PlannedCandidate, TuneConfig
from ._schedule import format_duration, parse_duration, rung_iterations, rung_sizes, survivors, within_weighted_speedup
from ._session import checkpoint_name, tune_contenders
from ._tune import CandidateHistory, FrontRow, TuneResult, load_result, tune
from ._units import UnitResult

__all__ = [
    "DEFAULT_MARGIN",
    "CandidateHistory",
    "FrontRow",
    "Plan",
    "PlannedCandidate",
    "TuneConfig",
    "TuneResult",
    "UnitResult",
    "checkpoint_name",
    "within_weighted_speedup",
    "format_duration",
    "load_result",
    "parse_duration",
    "rung_iterations",
    "rung_sizes",
    "survivors",
    "tune",
    "tune_contenders",
]
