"""The selection rule itself: propose candidates on validation, confirm them on test tasks.

Numbers in, a decision out: nothing here knows Optuna, a model or a study, so the rule can be simulated
thousands of times (``tests/test_selection_error_rate.py``, ``examples/selection_power.py``);
:mod:`patternsearch.search` feeds it a study's trials and the scores of real adaptations.

1. **Validation proposes** (:mod:`._proposals`): :func:`propose` is :func:`plan`'s picks on the
   :func:`validation_front`.
2. **Confirmation tasks decide** (:mod:`._testing`): :func:`confirm_in_sequence` runs a graphical
   multiple-testing procedure whose initial shares come from :mod:`._graphs` (:func:`power_graph`).

The promise (within D of the baseline with probability at least ``confidence``), its assumptions, the
choices behind each step and the simulations that measure them are in docs/selection.md.
"""

from ._graphs import (
    ANCHOR_SHARE,
    POWER_GRID_STEPS,
    POWER_SHARE,
    Graph,
    fallback_graph,
    fixed_sequence_graph,
    holm_graph,
    intersection_weights,
    power_graph,
    predicted_power,
    predicted_speedup,
)
from ._proposals import (
    DEFAULT_CANDIDATES,
    GROUP_TEST_LEVEL,
    group_differences,
    group_variance,
    new_group_gap,
    pick_candidates,
    plan,
    propose,
    validation_front,
    winners_curse_corrected,
)
from ._records import CandidateTest, Decision, Proposal, check_promise
from ._testing import (
    MAX_PARAMETRIC_CANDIDATES,
    IntersectionLevels,
    closed_test,
    confirm_in_sequence,
    graphical_test,
    p_value,
    statistic_correlation,
)

__all__ = [
    "ANCHOR_SHARE",
    "DEFAULT_CANDIDATES",
    "GROUP_TEST_LEVEL",
    "MAX_PARAMETRIC_CANDIDATES",
    "POWER_GRID_STEPS",
    "POWER_SHARE",
    "CandidateTest",
    "Decision",
    "Graph",
    "IntersectionLevels",
    "Proposal",
    "closed_test",
    "confirm_in_sequence",
    "fallback_graph",
    "fixed_sequence_graph",
    "graphical_test",
    "group_differences",
    "group_variance",
    "check_promise",
    "holm_graph",
    "intersection_weights",
    "new_group_gap",
    "p_value",
    "pick_candidates",
    "plan",
    "power_graph",
    "predicted_power",
    "predicted_speedup",
    "propose",
    "statistic_correlation",
    "validation_front",
    "winners_curse_corrected",
]
