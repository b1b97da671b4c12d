"""The multiple-testing graphs: each candidate's initial share of the error rate and where it passes on.

The shares of :func:`power_graph` go half by :func:`fallback_graph` and half where validation predicts the
speed; docs/selection.md ("Power") compares the graphs on simulations.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from ._records import CandidateTest

ANCHOR_SHARE = 0.4
"""Share of the error rate the fallback chain gives the anchor (slowest candidate) at the start."""


@dataclass(frozen=True)
class Graph:
    """A graphical multiple-testing procedure over candidates ordered fastest first.

    Attributes:
        weights: Each candidate's initial share of the error rate (summing to at most 1).
        transitions: ``transitions[i, j]``: the share of candidate ``i``'s
            level passed to candidate ``j`` when ``i`` is confirmed (rows sum
            to at most 1, zero diagonal).
        name: What the procedure is called in reports.
    """

    weights: np.ndarray
    transitions: np.ndarray
    name: str


def fallback_graph(candidates: int, anchor_share: float = ANCHOR_SHARE) -> Graph:
    """The fallback chain: ``anchor_share`` on the slowest candidate, the rest equally on the others.

    A confirmed candidate passes its level to the next faster one; the
    fastest passes it back to the slowest.
    """
    if candidates == 1:
        return fixed_sequence_graph(1)
    weights = np.full(candidates, (1.0 - anchor_share) / (candidates - 1))
    weights[-1] = anchor_share
    return Graph(weights, _chain(candidates), f"fallback ({anchor_share:.0%} on the slowest)")


def fixed_sequence_graph(candidates: int) -> Graph:
    """Fixed-sequence testing, slowest first: the whole level on the slowest, passed on to the next faster."""
    weights = np.zeros(candidates)
    weights[-1:] = 1.0
    return Graph(weights, _chain(candidates), "fixed sequence")


def holm_graph(candidates: int) -> Graph:
    """Holm's procedure: equal shares, a confirmed candidate's level split equally among the others."""
    transitions = np.full((candidates, candidates), 1.0 / max(candidates - 1, 1))
    np.fill_diagonal(transitions, 0.0)
    return Graph(np.full(candidates, 1.0 / candidates), transitions, "Holm")


POWER_GRID_STEPS = 20
"""The initial weights :func:`power_graph` searches are multiples of ``1/20`` (coarser for many candidates)."""


_POWER_GRID_ROWS = 200_000


POWER_SHARE = 0.5
"""Share of :func:`power_graph`'s initial weights set by validation power (the rest: :func:`fallback_graph`'s)."""


def predicted_power(mean: np.ndarray, standard_error: np.ndarray, levels: np.ndarray,
                    max_degradation: float) -> np.ndarray:
    """The chance that a candidate passes at each level on confirmation tasks, taking validation at its word.

    Plug-in: the candidate's true difference is its validation ``mean``, and
    the confirmation's mean scatters around it by the validation standard
    error ``s`` (a design of the same size); it passes at level ``a`` when
    that mean minus ``z_(1-a) s`` is at least ``-D``:
    ``P = Phi((mean + D) / s - z_(1-a))``. Zero at level 0. (Adding the
    uncertainty of the true difference itself favours long shots: fast
    candidates far from D; simulated, that lost speed on every front where
    validation already orders the candidates right.)
    """
    mean, error, levels = np.asarray(mean), np.asarray(standard_error), np.asarray(levels, dtype=np.float64)
    quantile = -special.ndtri(np.clip(levels, 1e-300, 0.5))
    power = special.ndtr((mean + max_degradation) / error - quantile)
    return np.where(levels > 0.0, power, 0.0)


def power_graph(candidates: Sequence[CandidateTest], *, max_degradation: float, confidence: float) -> Graph:
    """The fallback chain with initial weights half where validation says the speed is, half as usual.

    The weights that maximize the expected speedup of the selection (the
    fastest confirmed candidate; 1 for the baseline) are found among the
    weights in multiples of ``1/``:data:`POWER_GRID_STEPS` (summing to 1;
    coarser when that grid has over 200,000 points), each candidate's chance
    of passing at its initial level from :func:`predicted_power` on its
    winner's-curse corrected validation difference (``val_corrected``, else
    ``val_difference``) and its validation standard error
    (``val_standard_error``), the candidates taken as independent and the levels passed on
    ignored. Those predictions are rough (the confirmation's standard error
    and degrees of freedom differ from validation's; a winner's curse may
    remain), so the graph takes the mean of these weights and
    :func:`fallback_graph`'s (``POWER_SHARE`` of each). A fast candidate
    that validation puts well within D gets a large share; one that
    validation puts beyond D keeps only its fallback share. The weights
    depend on validation only, so the family-wise error bound holds as for
    any fixed graph. :func:`fallback_graph` itself when some candidate lacks
    a validation speedup, difference or standard error.
    """
    return _power_weights_and_speedup(candidates, max_degradation=max_degradation, confidence=confidence)[0]


def predicted_speedup(candidates: Sequence[CandidateTest], *, max_degradation: float, confidence: float) -> float:
    """The expected speedup of the selection testing ``candidates`` with :func:`power_graph`, predicted by validation.

    The selection is the fastest confirmed candidate (speedup 1 for the
    baseline). The same plug-in as :func:`power_graph`'s (each candidate's chance of
    passing at its initial level, independently; levels passed on ignored),
    at the weights :func:`power_graph` gives: what :func:`pick_candidates`
    compares. NaN when some candidate lacks a validation speedup, difference
    or standard error.
    """
    return _power_weights_and_speedup(candidates, max_degradation=max_degradation, confidence=confidence)[1]


def _power_weights_and_speedup(candidates: Sequence[CandidateTest], *, max_degradation: float,
                               confidence: float) -> tuple[Graph, float]:
    """:func:`power_graph`'s graph and the expected speedup of the selection its initial weights predict."""
    count = len(candidates)
    means = [c.val_corrected if c.val_corrected is not None else c.val_difference for c in candidates]
    if any(m is None or c.val_standard_error is None or not math.isfinite(c.val_standard_error) or not c.val_speedup
           for m, c in zip(means, candidates, strict=True)):
        graph = fallback_graph(count) if count > 1 else fixed_sequence_graph(count)
        return graph, math.nan
    errors = np.array([max(float(c.val_standard_error or 0.0), 1e-9) for c in candidates])
    speedups = np.array([c.val_speedup for c in candidates], dtype=np.float64)

    def selection_speedup(weights: np.ndarray) -> np.ndarray:
        power = predicted_power(np.asarray(means)[None, :], errors[None, :], (1.0 - confidence) * weights,
                                max_degradation)
        # The fastest confirmed is selected: candidate i when it passes and every faster one fails.
        none_faster = np.cumprod(np.hstack([np.ones((len(weights), 1)), 1.0 - power[:, :-1]]), axis=1)
        return (power * none_faster) @ speedups + np.prod(1.0 - power, axis=1)

    if count < 2:
        graph = fixed_sequence_graph(count)
        return graph, float(selection_speedup(graph.weights[None, :])[0])
    fallback = fallback_graph(count)
    steps = next(n for n in range(POWER_GRID_STEPS, 0, -1) if math.comb(n + count - 1, count - 1) <= _POWER_GRID_ROWS)
    grid = _simplex_grid(count, steps)
    best = POWER_SHARE * grid[int(np.argmax(selection_speedup(grid)))] + (1.0 - POWER_SHARE) * fallback.weights
    graph = Graph(best, fallback.transitions, f"fallback, {POWER_SHARE:.0%} of the weights by validation power")
    return graph, float(selection_speedup(best[None, :])[0])


@functools.cache
def _simplex_grid(parts: int, steps: int) -> np.ndarray:
    """Every vector of ``parts`` multiples of ``1/steps`` summing to 1, one per row (stars and bars; read-only)."""
    bars = np.array(list(itertools.combinations(range(steps + parts - 1), parts - 1)), dtype=np.int64)
    bars = bars.reshape(-1, parts - 1)
    edges = np.hstack([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), steps + parts - 1)])
    grid = (np.diff(edges, axis=1) - 1) / steps
    grid.flags.writeable = False
    return grid


def _chain(candidates: int) -> np.ndarray:
    """Transitions from each candidate to the next faster one, and from the fastest back to the slowest."""
    transitions = np.zeros((candidates, candidates))
    for i in range(1, candidates):
        transitions[i, i - 1] = 1.0
    if candidates > 1:
        transitions[0, -1] = 1.0
    return transitions


def pass_on(levels: np.ndarray, transitions: np.ndarray, done: int,
             open_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph after candidate ``done`` leaves it: its level passed on, the transitions rerouted around it.

    ``done``'s own entry keeps its level. Algorithm 1 of Bretz et al. (2009); ``open_`` marks the
    candidates still in the graph (without ``done``).
    """
    levels = levels.copy()
    levels[open_] += levels[done] * transitions[done, open_]
    updated = np.zeros_like(transitions)
    for j in np.flatnonzero(open_):
        loop = transitions[j, done] * transitions[done, j]
        for k in np.flatnonzero(open_):
            if j != k and loop < 1.0:
                updated[j, k] = (transitions[j, k] + transitions[j, done] * transitions[done, k]) / (1.0 - loop)
    return levels, updated


def intersection_weights(graph: Graph, members: np.ndarray) -> np.ndarray:
    """The weights the graph gives the intersection of the hypotheses ``members`` (Bretz et al. 2011).

    Every other candidate leaves the graph as if it had been confirmed,
    passing its weight on; zero outside ``members``.
    """
    weights = np.asarray(graph.weights, dtype=np.float64)
    transitions = np.array(graph.transitions, dtype=np.float64)
    open_ = np.ones(len(weights), dtype=bool)
    for done in np.flatnonzero(~np.asarray(members, dtype=bool)):
        open_[done] = False
        weights, transitions = pass_on(weights, transitions, int(done), open_)
    return np.where(open_, weights, 0.0)
