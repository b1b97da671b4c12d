"""The selection rule itself: propose candidates on validation, confirm them on test tasks.

Numbers in, a decision out: nothing here knows Optuna, a model or a study,
so the rule can be simulated thousands of times
(``tests/test_selection_error_rate.py``, ``examples/selection_power.py``).
:mod:`patternsearch.search` feeds it a study's trials and the scores of real
adaptations.

The promise: the selected pattern's accuracy is within ``max_degradation``
(D) of the baseline's, with probability at least ``confidence``.

1. **Validation proposes** (:func:`propose`), before any test task is
   scored. Validation winners of a large space are overestimated (the
   winner's curse), so each proposal's validation difference ``x`` is first
   corrected by Tweedie's formula (Efron 2011), ``x + s^2 d/dx log f(x)``,
   with ``s`` its standard error and ``f`` a Gaussian kernel density (bandwidth:
   the median ``s``) of the validation differences of every pattern the
   study compared: a pattern on top of a crowd of similar ones is pulled
   toward the crowd, an isolated one keeps its value. Where validation's
   units have groups (Omniglot: alphabets), the corrected difference is then
   moved down to the least favourable group's (:func:`worst_group_gap`):
   the test split is a new group, and the patterns that validation's groups
   disagree on are the ones a new group moves. Proposals whose
   corrected one-sided ``confidence`` lower bound is below ``-D`` are dropped;
   of the rest, the most reliable one (highest corrected bound) is the
   *anchor*, taken among the plain patterns (one phase, base step size) when
   any is left: in a richer space, the multi-phase patterns with fitted step
   sizes that top validation are the likeliest to be overfit to its
   characters, and a failed anchor wastes its share of the error rate. A
   faster proposal stays only if it is more likely to be confirmed (higher
   corrected bound) than every faster one, which leaves a front from the
   fastest plausible pattern to the anchor (:func:`validation_front`). The
   anchor and at most ``max_candidates - 1`` others are tested
   (:func:`pick_candidates`): added one at a time, each time the one that
   most raises the expected speedup validation predicts for the set.
2. **Confirmation tasks decide** (:func:`confirm_in_sequence`), by a
   graphical multiple-testing procedure (Bretz et al. 2009) over the
   one-sided non-inferiority hypotheses ``H_i: loss_i >= D``: candidate
   ``i`` passes at level ``a`` when the one-sided ``1 - a`` lower bound of
   its paired difference to the baseline on the confirmation tasks is at
   least ``-D``. The graph is a fallback chain (Wiens 2003): a confirmed
   candidate passes its whole level to the next faster one not yet
   confirmed (the fastest one passes it back to the slowest). Unlike
   fixed-sequence testing (the graph with everything on the anchor,
   :func:`fixed_sequence_graph`), a candidate that fails does not end the
   search: every faster one is still tested at its own share. The initial
   shares of ``alpha = 1 - confidence`` (:func:`power_graph`) are half
   :func:`fallback_graph`'s (``ANCHOR_SHARE`` on the anchor, the rest in
   equal parts) and half those that maximize the expected speedup of the
   answer predicted from each candidate's validation difference: the level
   goes where validation says the speed is, but not all of it. The fastest
   confirmed candidate is selected (none: the baseline is the answer).
   :func:`plan` is this rule; docs/selection.md compares it with others
   (candidates spread along the front, fixed sequence, anchor-heavy fallbacks) on
   simulations with and without a new alphabet's shift and on replays of
   real studies.
3. **The candidates' correlation is used** (:func:`closed_test`): their
   paired differences share the baseline's scores and the tasks, so their
   statistics are positively correlated, and Bonferroni levels (each
   candidate at its weight times ``alpha``) spend only part of ``alpha``
   (simulated family-wise error 0.020-0.024 of 0.05). The graph's closed
   test with weighted parametric local tests (Bretz et al. 2011) tests each
   intersection of hypotheses at its weights times ``c_J * alpha``, ``c_J >=
   1`` chosen so that the intersection's error is ``alpha`` when the
   statistics are jointly normal with the correlation estimated from the
   confirmation tasks themselves (:func:`statistic_correlation`, under the
   same crossed model as the bounds).

The guarantee: every intersection of true hypotheses is rejected with
probability at most ``alpha`` (exactly so for weighted Bonferroni; for the
parametric tests, as far as the joint normality and the estimated
correlation hold, which ``tests/test_selection_error_rate.py`` and
``examples/selection_power.py`` check on simulated splits like the real
one), so by the closure principle the probability of confirming *any*
candidate whose true loss is at least D (the family-wise error, whatever
the losses of the others) is at most ``alpha``. The selected pattern can
only be wrong if some such candidate was confirmed, so it is within D with
probability at least ``confidence``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, special

from .errors import AdaptationDiverged
from .uncertainty import Estimate, TaskDesign, estimate

ANCHOR_SHARE = 0.4
"""Share of the error rate the fallback chain gives the anchor (slowest candidate) at the start."""
DEFAULT_CANDIDATES = 5
"""Candidates ``select`` tests at most by default."""


@dataclass(frozen=True)
class Proposal:
    """A pattern that validation may propose.

    Attributes:
        pattern: The pattern's text.
        speedup: Its speedup over the baseline measured on validation.
        val_difference: Its validation accuracy minus the baseline's.
        val_differences: Per-task paired validation differences (empty when
            unknown: the pattern is then proposed on its point estimate).
        trial: Its trial in the study, if it has one.
        plain: Whether it is of the plainest kind searched (one phase at the
            base step size): such patterns fit fewer parameters to the
            validation tasks, so the anchor is taken from them when any is
            plausible.
    """

    pattern: str
    speedup: float
    val_difference: float
    val_differences: np.ndarray
    trial: int | None = None
    plain: bool = True


@dataclass(frozen=True)
class CandidateTest:
    """One candidate of the selection and what the confirmation tasks said of it.

    Attributes:
        pattern: The pattern's text.
        trial: Its trial in the study (None for a pattern confirmed without
            a study, as are the validation fields).
        val_difference: Validation accuracy minus the baseline's.
        val_speedup: Speedup over the baseline measured on validation.
        val_corrected: ``val_difference`` corrected for the winner's curse.
        val_lower_bound: The corrected difference's one-sided lower bound on validation.
        test_difference: Mean paired difference on the confirmation tasks
            (None when it was not tested).
        lower_bound: One-sided lower confidence bound of that difference, at
            confidence ``1 - level``.
        level: The significance level the candidate held when testing ended
            (its share of ``1 - confidence``, plus what confirmed candidates
            passed on to it).
        confirmed: Whether ``lower_bound >= -max_degradation``.
        checkpoint: The checkpoint the candidate adapts, when candidates
            differ in it (``tune``: specialized checkpoints next to their
            parent); None: the one checkpoint of the comparison.
        diverged: Confirmation tasks on which its adaptation diverged (it is
            then not confirmed, and keeps its share of the error rate).
    """

    pattern: str
    trial: int | None
    val_difference: float | None
    val_speedup: float | None
    val_corrected: float | None = None
    val_lower_bound: float | None = None
    test_difference: float | None = None
    lower_bound: float | None = None
    level: float | None = None
    confirmed: bool = False
    checkpoint: str | None = None
    diverged: int = 0


@dataclass(frozen=True)
class Decision:
    """Every candidate's test (fastest first) and the selected one (None: the baseline), with the reason."""

    candidates: tuple[CandidateTest, ...]
    selected: CandidateTest | None
    reason: str


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
    ``val_difference``) and the standard error behind its validation lower
    bound, the candidates taken as independent and the levels passed on
    ignored. Those predictions are rough (the confirmation's standard error
    and degrees of freedom differ from validation's; a winner's curse may
    remain), so the graph takes the mean of these weights and
    :func:`fallback_graph`'s (``POWER_SHARE`` of each). A fast candidate
    that validation puts well within D gets a large share; one that
    validation puts beyond D keeps only its fallback share. The weights
    depend on validation only, so the family-wise error bound holds as for
    any fixed graph. :func:`fallback_graph` itself when some candidate lacks
    a validation speedup, difference or bound.
    """
    return _powered(candidates, max_degradation=max_degradation, confidence=confidence)[0]


def predicted_speedup(candidates: Sequence[CandidateTest], *, max_degradation: float, confidence: float) -> float:
    """The expected speedup of testing ``candidates`` with :func:`power_graph`, as validation predicts it.

    The same plug-in as :func:`power_graph`'s (each candidate's chance of
    passing at its initial level, independently; levels passed on ignored),
    at the weights :func:`power_graph` gives: what :func:`pick_candidates`
    compares. NaN when some candidate lacks a validation speedup, difference
    or bound.
    """
    return _powered(candidates, max_degradation=max_degradation, confidence=confidence)[1]


def _powered(candidates: Sequence[CandidateTest], *, max_degradation: float,
             confidence: float) -> tuple[Graph, float]:
    """:func:`power_graph`'s graph and the expected speedup its initial weights are predicted to give."""
    count = len(candidates)
    means = [c.val_corrected if c.val_corrected is not None else c.val_difference for c in candidates]
    if any(m is None or c.val_lower_bound is None or not c.val_speedup
           for m, c in zip(means, candidates, strict=True)):
        graph = fallback_graph(count) if count > 1 else fixed_sequence_graph(count)
        return graph, math.nan
    quantile = float(special.ndtri(confidence))
    errors = np.array([max((m - c.val_lower_bound) / quantile, 1e-9)
                       for m, c in zip(means, candidates, strict=True)])
    speedups = np.array([c.val_speedup for c in candidates], dtype=np.float64)

    def expected_speedup(weights: np.ndarray) -> np.ndarray:
        power = predicted_power(np.asarray(means)[None, :], errors[None, :], (1.0 - confidence) * weights,
                                max_degradation)
        # The fastest confirmed is selected: candidate i when it passes and every faster one fails.
        none_faster = np.cumprod(np.hstack([np.ones((len(weights), 1)), 1.0 - power[:, :-1]]), axis=1)
        return (power * none_faster) @ speedups + np.prod(1.0 - power, axis=1)

    if count < 2:
        graph = fixed_sequence_graph(count)
        return graph, float(expected_speedup(graph.weights[None, :])[0])
    fallback = fallback_graph(count)
    steps = next(n for n in range(POWER_GRID_STEPS, 0, -1) if math.comb(n + count - 1, count - 1) <= _POWER_GRID_ROWS)
    grid = _simplex_grid(count, steps)
    best = POWER_SHARE * grid[int(np.argmax(expected_speedup(grid)))] + (1.0 - POWER_SHARE) * fallback.weights
    graph = Graph(best, fallback.transitions, f"fallback, {POWER_SHARE:.0%} of the weights by validation power")
    return graph, float(expected_speedup(best[None, :])[0])


def pick_candidates(front: Sequence[CandidateTest], *, max_candidates: int, max_degradation: float,
                    confidence: float) -> list[CandidateTest]:
    """The at most ``max_candidates`` patterns of a validation front worth testing, fastest first.

    The anchor (the front's last, most reliable pattern) is always tested;
    the others are added one at a time, each time the one that most raises
    :func:`predicted_speedup` of the set, until ``max_candidates`` or until
    no addition raises it (another candidate also thins every share of the
    error rate). Spreading the picks evenly along the front instead spent
    them on slow, safe patterns between the anchor and the fast end: see
    ``examples/selection_power.py --long-fronts``. The picks depend on
    validation only, so the family-wise error bound holds as for any fixed
    set of candidates.

    Args:
        front: A :func:`validation_front`, fastest first, the anchor last.
        max_candidates: At most this many are returned (the anchor included).
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence of the confirmation.

    Returns:
        The picks, fastest first; the last is the anchor.

    Raises:
        ValueError: If a candidate lacks its validation speedup, difference or bound.
    """
    if any(c.val_speedup is None or c.val_difference is None or c.val_lower_bound is None for c in front):
        raise ValueError("picking candidates needs each one's validation speedup, difference and bound")
    if len(front) <= 1 or max_candidates <= 1:
        return list(front[-1:])
    order = {id(candidate): i for i, candidate in enumerate(front)}
    chosen, value = [front[-1]], predicted_speedup(front[-1:], max_degradation=max_degradation,
                                                   confidence=confidence)
    while len(chosen) < min(max_candidates, len(front)):
        options = []
        for candidate in front[:-1]:
            if any(candidate is c for c in chosen):
                continue
            trial = sorted([*chosen, candidate], key=lambda c: order[id(c)])
            options.append((predicted_speedup(trial, max_degradation=max_degradation, confidence=confidence), trial))
        best_value, best = max(options, key=lambda option: option[0])
        if not best_value > value:
            break
        chosen, value = best, best_value
    return chosen


def plan(front: Sequence[CandidateTest], *, max_degradation: float, confidence: float,
         max_candidates: int = DEFAULT_CANDIDATES) -> tuple[list[CandidateTest], Graph]:
    """The candidates ``select`` and ``tune`` test from a validation front, and the graph that tests them.

    :func:`pick_candidates` (where validation predicts the speed), tested by
    :func:`power_graph`. Both depend on validation only; the front itself
    is judged on each pattern's least favourable validation group
    (:func:`validation_front`). docs/selection.md compares this rule with
    others on simulations and on replays of real studies.
    """
    picks = pick_candidates(front, max_candidates=max_candidates, max_degradation=max_degradation,
                            confidence=confidence)
    return picks, power_graph(picks, max_degradation=max_degradation, confidence=confidence)


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


def graphical_test(estimates: Sequence[Estimate], graph: Graph, *, max_degradation: float,
                   alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The sequentially rejective graphical procedure (Bretz et al. 2009, algorithm 1).

    Args:
        estimates: Each candidate's paired difference to the baseline, fastest first.
        graph: Initial weights and transitions.
        max_degradation: D: candidate ``i`` is confirmed at level ``a`` when
            ``estimates[i].lower_bound(1 - a) >= -D``.
        alpha: Family-wise error rate (``1 - confidence``).

    Returns:
        Whether each candidate is confirmed, and the level each held at the end.
    """
    levels = alpha * np.asarray(graph.weights, dtype=np.float64)
    transitions = np.array(graph.transitions, dtype=np.float64)
    confirmed = np.zeros(len(estimates), dtype=bool)
    p_values = [p_value(e, max_degradation) for e in estimates]
    while True:
        passing = [i for i in range(len(estimates)) if not confirmed[i] and levels[i] > 0.0
                   and p_values[i] <= levels[i]]
        if not passing:
            return confirmed, levels
        i = passing[0]  # the final result does not depend on the order of confirmations
        confirmed[i] = True
        levels, transitions = _pass_on(levels, transitions, i, ~confirmed)


def _pass_on(levels: np.ndarray, transitions: np.ndarray, done: int,
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
        weights, transitions = _pass_on(weights, transitions, int(done), open_)
    return np.where(open_, weights, 0.0)


MAX_PARAMETRIC_CANDIDATES = 8
"""Above this many candidates the closed test's 2^m intersections cost too much: Bonferroni levels are used."""
_COPULA_DRAWS = 1 << 15
_COPULA_SEED = 0  # the same draws every time: a decision does not depend on when it is made


def p_value(estimate_: Estimate, max_degradation: float) -> float:
    """The smallest level ``a`` at which ``estimate_`` confirms: ``lower_bound(1 - a) >= -max_degradation``.

    1 when it does not confirm even at the 50% level, has no interval, or
    has no spread (every paired difference equal: few tasks at 100%, say),
    since a bound of zero width supports nothing.
    """
    def margin(log_level: float) -> float:
        return estimate_.lower_bound(1.0 - math.exp(log_level)) + max_degradation

    if not estimate_.reliable or not estimate_.standard_error > 0.0 or margin(math.log(0.5)) < 0.0:
        return 1.0
    if margin(math.log(1e-12)) >= 0.0:
        return 0.0
    return math.exp(optimize.brentq(margin, math.log(1e-12), math.log(0.5), xtol=1e-10))


@functools.cache
def _standard_normals(columns: int) -> np.ndarray:
    """The fixed draws behind every parametric level (read-only)."""
    draws = np.random.default_rng(_COPULA_SEED).standard_normal((_COPULA_DRAWS, columns))
    draws.flags.writeable = False
    return draws


def statistic_correlation(differences: Sequence[np.ndarray], estimates: Sequence[Estimate],
                          design: TaskDesign) -> np.ndarray | None:
    """Correlation of the candidates' mean paired differences, under the same crossed model as their bounds.

    ``cov(i, j) = (se_i^2 + se_j^2 - se_{i-j}^2) / 2``, with each standard
    error from :func:`~patternsearch.uncertainty.estimate` on the same
    design, so the units' share of the covariance is weighted as it is in
    the means (a per-task correlation would be dominated by task noise, in
    which every candidate shares the baseline's, and overstate it). The
    matrix is projected onto the correlation matrices. None when some
    candidate has no interval or no spread: the correlation is then unknown.
    """
    errors = np.array([e.standard_error if e.reliable else math.nan for e in estimates])
    if not np.all(np.isfinite(errors) & (errors > 0.0)):
        return None
    m = len(estimates)
    correlation = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            apart = estimate(np.asarray(differences[i]) - np.asarray(differences[j]), design)
            spread = apart.standard_error if apart.reliable else math.inf
            value = (errors[i] ** 2 + errors[j] ** 2 - spread**2) / (2.0 * errors[i] * errors[j])
            correlation[i, j] = correlation[j, i] = float(np.clip(value, -1.0, 1.0))
    values, vectors = np.linalg.eigh(correlation)
    correlation = (vectors * np.maximum(values, 0.0)) @ vectors.T
    scale = np.sqrt(np.diag(correlation))
    return correlation / np.outer(scale, scale)


class IntersectionLevels:
    """The local levels of a graph's intersection hypotheses, weighted parametric (Bretz et al. 2011).

    The intersection ``J`` of hypotheses gets levels ``c_J * w_J(j) * alpha``
    for its members ``j``, where ``w_J`` are the graph's weights for ``J``
    (:func:`intersection_weights`) and ``c_J >= 1`` the largest factor that
    keeps the chance of any member passing at ``alpha`` when the statistics
    are jointly normal with ``correlation`` (a Gaussian copula over each
    bound's own distribution, computed on fixed draws with a margin of two
    Monte Carlo standard errors). With ``correlation`` None, or more than
    :data:`MAX_PARAMETRIC_CANDIDATES` candidates, ``c_J = 1``: weighted
    Bonferroni. Levels depend on the graph and the correlation only, not
    on the data tested, so one object serves many tests; each is computed
    once, when first asked for.
    """

    def __init__(self, graph: Graph, alpha: float, correlation: np.ndarray | None) -> None:
        self.graph, self.alpha = graph, alpha
        self.size = len(graph.weights)
        self.parametric = correlation is not None and self.size <= MAX_PARAMETRIC_CANDIDATES
        self._correlation = correlation
        self._tails: np.ndarray | None = None
        self._levels: dict[int, np.ndarray] = {}

    def of(self, members: int) -> np.ndarray:
        """The levels of the intersection of the hypotheses in the bit mask ``members`` (zero outside it)."""
        if members not in self._levels:
            weights = intersection_weights(self.graph, np.array([(members >> i) & 1 for i in range(self.size)],
                                                                dtype=bool))
            self._levels[members] = np.minimum(self._factor(weights) * self.alpha * weights, self.alpha)
        return self._levels[members]

    def _factor(self, weights: np.ndarray) -> float:
        if not self.parametric:
            return 1.0
        if self._tails is None:
            values, vectors = np.linalg.eigh(self._correlation)
            self._tails = special.ndtr(-_standard_normals(self.size)
                                      @ (vectors * np.sqrt(np.maximum(values, 0.0))).T)
        tested = np.flatnonzero(weights > 0.0)
        ratio = (self._tails[:, tested] / weights[tested]).min(axis=1)
        # The alpha-quantile of the draws, two Monte Carlo standard errors toward the safe side.
        rank = int(self.alpha * _COPULA_DRAWS * (1.0 - 2.0 * math.sqrt((1.0 - self.alpha)
                                                                        / (self.alpha * _COPULA_DRAWS))))
        return max(float(np.partition(ratio, rank)[rank]) / self.alpha, 1.0)


def closed_test(estimates: Sequence[Estimate], levels: IntersectionLevels, *,
                max_degradation: float) -> tuple[np.ndarray, np.ndarray]:
    """The closed test of ``levels``: a candidate is confirmed when every intersection containing it is rejected.

    An intersection is rejected when one of its members passes at its local
    level there (``p_value <= level``). Correlated statistics (the
    candidates share the baseline's scores and the tasks) give parametric
    levels above Bonferroni's, at the same family-wise error.

    Returns:
        Whether each candidate is confirmed, and the level that decided it:
        for a confirmed one, its level beside every candidate not confirmed
        (where it passes; the whole level where it does not); for one not
        confirmed, its highest level in an intersection that was not
        rejected, at which it fails.
    """
    m = len(estimates)
    p_values = np.array([p_value(e, max_degradation) for e in estimates])
    containing = [[mask for mask in range(1, 1 << m) if mask >> i & 1] for i in range(m)]

    def rejected(mask: int) -> bool:
        return bool((p_values <= levels.of(mask))[[(mask >> i) & 1 == 1 for i in range(m)]].any())

    confirmed = np.array([p_values[i] <= levels.alpha and all(rejected(mask) for mask in containing[i])
                          for i in range(m)], dtype=bool)
    unconfirmed = sum(1 << i for i in range(m) if not confirmed[i])
    decisive = []
    for i in range(m):
        if confirmed[i]:
            beside = levels.of(unconfirmed | 1 << i)[i]
            decisive.append(beside if p_values[i] <= beside else levels.alpha)
        else:
            decisive.append(max(levels.of(mask)[i] for mask in containing[i] if not rejected(mask)))
    return confirmed, np.array(decisive)


def propose(proposals: Sequence[Proposal], design: TaskDesign, *, max_degradation: float, confidence: float,
            max_candidates: int, compared: Sequence[float] | np.ndarray | None = None) -> list[CandidateTest]:
    """The candidates to test (step 1): :func:`plan`'s picks on the :func:`validation_front`.

    Args:
        proposals: As for :func:`validation_front`.
        design: As for :func:`validation_front`.
        max_degradation: D, in accuracy units.
        confidence: Level of the validation lower bound and of the family-wise confidence.
        max_candidates: At most this many are returned.
        compared: As for :func:`validation_front`.

    Returns:
        The candidates, fastest first; the last is the anchor.
    """
    front = validation_front(proposals, design, max_degradation=max_degradation, confidence=confidence,
                             compared=compared)
    return plan(front, max_degradation=max_degradation, confidence=confidence, max_candidates=max_candidates)[0]


def validation_front(proposals: Sequence[Proposal], design: TaskDesign, *, max_degradation: float, confidence: float,
                     compared: Sequence[float] | np.ndarray | None = None) -> list[CandidateTest]:
    """Every pattern from the fastest plausible one to the most reliable one, winner's curse corrected.

    Args:
        proposals: Patterns faster than the baseline, in any order (all of
            a study's, not only its Pareto front: the correction can
            reorder them).
        design: The validation tasks' design (classes and units).
        max_degradation: D, in accuracy units.
        confidence: Level of the validation lower bound.
        compared: Validation differences to the baseline of every pattern
            the study compared (the proposals among them); their spread sets
            the winner's-curse correction. Default: the proposals' own.

    Returns:
        The front, fastest first, each pattern more reliable (higher corrected
        bound) than every faster one; the last is the anchor. Where the
        validation tasks know their units' groups (Omniglot: alphabets), a
        pattern's corrected difference is moved down by how far its least
        favourable group lies below its mean (:func:`worst_group_gap`): the
        test split is a new group, and patterns that validation's groups
        disagree on are the ones a new group moves.
    """
    kept, errors, gaps = [], [], []
    for proposal in proposals:
        differences = np.asarray(proposal.val_differences, dtype=np.float64)
        error, gap = math.nan, 0.0
        if differences.size:
            task_design = design if design.units is None or len(design.units) == differences.size \
                else TaskDesign.none()
            error = estimate(differences, task_design).standard_error
            if not math.isfinite(error):  # no interval on validation: nothing to propose it on
                continue
            gap = worst_group_gap(differences, task_design.groups)
        kept.append(proposal)
        errors.append(error)
        gaps.append(gap)
    if not kept:
        return []
    spread = np.asarray([p.val_difference for p in kept] if compared is None else compared, dtype=np.float64)
    known = np.asarray(errors)[np.isfinite(errors)]
    typical = float(np.median(known)) if known.size else 0.0
    quantile = float(special.ndtri(confidence))
    scored = []
    for proposal, error, gap in zip(kept, errors, gaps, strict=True):
        error = typical if math.isnan(error) else error
        corrected = (proposal.val_difference + error**2 * _log_density_slope(proposal.val_difference, spread, typical)
                     + gap)
        bound = corrected - quantile * error
        if bound >= -max_degradation:
            scored.append((proposal, corrected, bound))
    if not scored:
        return []
    anchor = max([item for item in scored if item[0].plain] or scored, key=lambda item: item[2])
    faster = sorted((item for item in scored if item[0].speedup > anchor[0].speedup),
                    key=lambda item: (-item[0].speedup, -item[2]))
    front: list[tuple[Proposal, float, float]] = []
    for item in faster:  # fastest first: keep a pattern only if more reliable than every faster one kept
        if not front or item[2] > front[-1][2]:
            front.append(item)
    front.append(anchor)
    return [CandidateTest(p.pattern, p.trial, p.val_difference, p.speedup, val_corrected=corrected,
                          val_lower_bound=bound) for p, corrected, bound in front]


def group_differences(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None) -> dict[int, float]:
    """The paired difference on each unit group (Omniglot: alphabet), by least squares; empty where none can be told.

    Tasks mix groups (a task's five characters come from several
    alphabets), so each group's difference is the least-squares fit of the
    per-task differences on each task's share of ways from that group.
    Empty without groups, with one group, or when the shares cannot
    separate them.
    """
    if groups is None or len(groups) != np.asarray(differences).size:
        return {}
    fit = _group_fit(groups)
    if fit is None:
        return {}
    names, solve = fit
    return dict(zip(names, map(float, solve @ np.asarray(differences, dtype=np.float64)), strict=True))


def worst_group_gap(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None) -> float:
    """How far the paired difference on the least favourable unit group lies below the mean (0 or negative).

    See :func:`group_differences`; 0 where it is empty.
    """
    by_group = group_differences(differences, groups)
    return min(0.0, min(by_group.values()) - float(np.mean(differences))) if by_group else 0.0


@functools.lru_cache(maxsize=16)
def _group_fit(groups: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The groups and the least-squares solve of a design's group shares (the same for every pattern; cached)."""
    names = tuple(sorted({g for task in groups for g in task}))
    if len(names) < 2:
        return None
    shares = np.array([[task.count(g) / len(task) for g in names] for task in groups])
    if np.linalg.matrix_rank(shares) < len(names):
        return None
    solve = np.linalg.pinv(shares)
    solve.flags.writeable = False
    return names, solve


def _log_density_slope(x: float, sample: np.ndarray, bandwidth: float) -> float:
    """``d/dx log f(x)`` for the Gaussian kernel density of ``sample`` (0 without a spread to learn from)."""
    if sample.size < 2 or bandwidth <= 0.0:
        return 0.0
    z = (sample - x) / bandwidth
    kernel = np.exp(-0.5 * z**2)
    total = float(kernel.sum())
    if total <= 0.0:  # x far from every compared pattern: nothing to pull it toward
        return 0.0
    return float(kernel @ z) / (total * bandwidth)


def confirm_in_sequence(candidates: Sequence[CandidateTest],
                        paired_differences: Callable[[CandidateTest], np.ndarray],
                        design: TaskDesign, *, max_degradation: float, confidence: float,
                        graph: Graph | None = None) -> Decision:
    """Tests the candidates against the baseline on the confirmation tasks by a graphical procedure (step 2).

    The graph's closed test with parametric local tests (:func:`closed_test`,
    :class:`IntersectionLevels`), the candidates' correlation estimated from
    the same tasks (:func:`statistic_correlation`); weighted Bonferroni
    (:func:`graphical_test`, the closed test's shortcut) when it cannot be.

    Args:
        candidates: Fastest first; the last is the anchor.
        paired_differences: A candidate's per-task scores minus the
            baseline's on the confirmation tasks (called once per candidate,
            with the candidate).
        design: The confirmation tasks' design.
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence.
        graph: The procedure (default: :func:`power_graph`, :func:`plan`'s, which is
            :func:`fallback_graph` where validation evidence is missing).
    """
    if not candidates:
        return Decision((), None, f"no pattern faster than the baseline has a validation lower bound (winner's "
                                  f"curse corrected) within {max_degradation:g}; the baseline is the answer")
    graph = graph or power_graph(candidates, max_degradation=max_degradation, confidence=confidence)
    differences, diverged = _differences(candidates, paired_differences)
    estimates = [_DIVERGED if d is None else estimate(d, design) for d in differences]
    scored = [i for i, d in enumerate(differences) if d is not None]
    correlation = None
    if scored and len(candidates) <= MAX_PARAMETRIC_CANDIDATES:  # not estimated where it is not used
        # A diverged candidate never passes (p-value 1): any correlation with it keeps the levels valid.
        found = statistic_correlation([differences[i] for i in scored], [estimates[i] for i in scored], design)
        if found is not None:
            correlation = np.eye(len(candidates))
            correlation[np.ix_(scored, scored)] = found
    levels_of = IntersectionLevels(graph, 1.0 - confidence, correlation)
    confirmed, levels = (closed_test(estimates, levels_of, max_degradation=max_degradation) if levels_of.parametric
                         else graphical_test(estimates, graph, max_degradation=max_degradation,
                                             alpha=1.0 - confidence))
    tests = tuple(replace(c, test_difference=None if e is _DIVERGED else e.mean, level=float(a), confirmed=bool(ok),
                          lower_bound=e.lower_bound(1.0 - a) if a > 0.0 and e is not _DIVERGED else None,
                          diverged=diverged[i].diverged if i in diverged else 0)
                  for i, (c, e, a, ok) in enumerate(zip(candidates, estimates, levels, confirmed, strict=True)))
    procedure = (f"{graph.name}, {'parametric' if levels_of.parametric else 'Bonferroni'} tests, "
                 f"family-wise error {1.0 - confidence:.3g}")
    if diverged:
        procedure += "; not confirmed, adaptation diverged: " + ", ".join(
            f"{candidates[i].pattern} on {e.diverged} of {e.tasks} tasks" for i, e in diverged.items())
    failed = [t for t in tests if not t.confirmed]
    flat = [c.pattern for c, e in zip(candidates, estimates, strict=True) if e.reliable and e.standard_error == 0.0]
    if flat:
        procedure += (f"; not confirmable, every paired difference equal (no spread to bound them by): "
                      f"{', '.join(flat)}: use more tasks")
    if not confirmed.any():
        best = max(tests, key=lambda t: -math.inf if t.lower_bound is None else t.lower_bound)
        return Decision(tests, None, f"none of the {len(tests)} candidates was confirmed ({procedure}): the highest "
                                     f"lower bound, {best.pattern}'s {_bound(best)}, is below -{max_degradation:g} "
                                     "or rests on no spread; the baseline is the answer")
    selected = tests[int(np.argmax(confirmed))]
    text = (f"{selected.pattern} is the fastest of {int(confirmed.sum())} confirmed candidates out of {len(tests)} "
            f"({procedure}): lower bound {_bound(selected)} >= -{max_degradation:g}")
    faster = [t for t in failed if tests.index(t) < tests.index(selected)]
    if faster:
        text += "; not confirmed, though faster: " + ", ".join(f"{t.pattern} ({_bound(t)})" for t in faster)
    return Decision(tests, selected, text)


_DIVERGED = Estimate(math.nan, math.inf, math.inf, 0, None, None, reliable=False, note="adaptation diverged")
"""The estimate of a candidate whose adaptation diverged: no interval, p-value 1."""


def _differences(candidates: Sequence[CandidateTest], paired_differences: Callable[[CandidateTest], np.ndarray],
                 ) -> tuple[list[np.ndarray | None], dict[int, AdaptationDiverged]]:
    """Each candidate's paired differences (None where adaptation diverged), and each divergence."""
    differences: list[np.ndarray | None] = []
    diverged: dict[int, AdaptationDiverged] = {}
    for index, candidate in enumerate(candidates):
        try:
            differences.append(np.asarray(paired_differences(candidate), dtype=np.float64))
        except AdaptationDiverged as error:
            differences.append(None)
            diverged[index] = error
    return differences, diverged


def _bound(test: CandidateTest) -> str:
    """``+0.0012 at 97.0%``: a candidate's lower bound and its confidence."""
    if test.lower_bound is None or test.level is None:
        return "untested (no level)"
    return f"{test.lower_bound:+.4f} at {1.0 - test.level:.2%}"
