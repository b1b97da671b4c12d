"""The selection rules that ``replay_selection.py`` and ``selection_power.py`` compare.

A rule takes a validation front (fastest first, the anchor last), D and the
confidence, and returns the candidates it tests and its graph (None: the
default of ``patternsearch.confirmation.confirm_in_sequence``). ``shipped``
is what ``select`` and ``tune`` run (``patternsearch.confirmation.plan``).
"""

from __future__ import annotations

from collections.abc import Callable

from patternsearch.confirmation import (
    CandidateTest,
    Graph,
    fallback_graph,
    fixed_sequence_graph,
    plan,
    spread_candidates,
)

Rule = Callable[[list[CandidateTest], float, float], tuple[list[CandidateTest], "Graph | None"]]


def _shipped(front: list[CandidateTest], d: float, confidence: float) -> tuple[list[CandidateTest], Graph | None]:
    return plan(front, max_degradation=d, confidence=confidence)


def _spread(count: int, graph: Callable[[int], Graph]) -> Rule:
    def rule(front: list[CandidateTest], d: float, confidence: float) -> tuple[list[CandidateTest], Graph | None]:
        picks = spread_candidates(front, count)
        return picks, graph(len(picks))
    return rule


RULES: dict[str, Rule] = {
    "shipped: 5 by predicted speedup, fallback 40% + validation power": _shipped,
    "5 spread, fixed sequence": _spread(5, fixed_sequence_graph),
    "8 spread, fixed sequence": _spread(8, fixed_sequence_graph),
    "8 spread, fallback 90% on the anchor": _spread(8, lambda m: fallback_graph(m, 0.9)),
    "8 spread, fallback 70% on the anchor": _spread(8, lambda m: fallback_graph(m, 0.7)),
}
