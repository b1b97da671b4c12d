"""``patternsearch report``: the answer of a study, its Pareto plot, per-step table and layer-group importance.

The report's headline is ``select``'s answer, read from the study (the
pattern confirmed on held-out test tasks, its bound and its speedup timed at
select time). Everything else comes from the study's validation tasks and
is labelled as such: a validation accuracy or an *estimated* speedup is what
the search saw, not what was confirmed. The report reads the study and never
writes to it.
"""

from ._build import DEFAULT_MAX_DEGRADATION, Report, ReportFiles, build_report, write_report
from ._content import StepRow, TrialRow, full_by_steps, headline, importances, per_step_table, stored_selection

__all__ = [
    "DEFAULT_MAX_DEGRADATION",
    "Report",
    "ReportFiles",
    "StepRow",
    "TrialRow",
    "build_report",
    "full_by_steps",
    "headline",
    "importances",
    "per_step_table",
    "stored_selection",
    "write_report",
]
