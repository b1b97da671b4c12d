"""The selection rules that ``replay_selection.py`` and ``selection_power.py`` compare.

A rule takes a validation front (fastest first, the anchor last), D and the
confidence, and returns the candidates it tests and its graph (None: the
default of ``patternsearch.confirmation.confirm_in_sequence``). ``shipped``
is what ``select`` and ``tune`` run (``patternsearch.confirmation.plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from patternsearch.confirmation import (
    CandidateTest,
    Graph,
    fallback_graph,
    fixed_sequence_graph,
    plan,
)

Rule = Callable[[list[CandidateTest], float, float], tuple[list[CandidateTest], "Graph | None"]]


def spread_candidates(front: Sequence[CandidateTest], count: int) -> list[CandidateTest]:
    """At most ``count`` patterns of a validation front, spread evenly in log speedup, fastest first.

    The anchor (the front's last) and the fastest pattern are always among
    them; the others are the front patterns nearest to speedups spaced
    evenly (geometrically) between those two, so the picks span the front.
    An alternative to ``pick_candidates`` for a front whose fast end a
    new alphabet may move (compared in docs/selection.md). The picks depend
    on validation only.

    Raises:
        ValueError: If a candidate lacks its validation speedup.
    """
    if any(not c.val_speedup for c in front):
        raise ValueError("spreading candidates needs each one's validation speedup")
    if len(front) <= count:
        return list(front)
    if count <= 1:
        return list(front[-1:])
    logs = np.log([float(c.val_speedup) for c in front])  # type: ignore[arg-type]
    chosen = {0, len(front) - 1}
    for target in np.linspace(logs[-1], logs[0], count)[1:-1]:
        free = [i for i in range(len(front)) if i not in chosen]
        chosen.add(min(free, key=lambda i: (abs(logs[i] - target), i)))
    return [front[i] for i in sorted(chosen)]


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
