"""Step 2, on the confirmation tasks: the graphical procedure's tests, parametric where the correlation is known.

The closed test with weighted parametric local tests (Bretz et al. 2011), weighted Bonferroni where the
correlation is unknown; a candidate whose adaptation diverges is not confirmed. docs/selection.md states
the guarantee and the simulations behind it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from scipy import optimize, special, stats

from ..errors import AdaptationDiverged
from ..uncertainty import Estimate, TaskDesign, estimate
from ._graphs import (
    Graph,
    intersection_weights,
    pass_on,
    power_graph,
)
from ._records import CandidateTest, Decision


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
        levels, transitions = pass_on(levels, transitions, i, ~confirmed)


MAX_PARAMETRIC_CANDIDATES = 8
"""Above this many candidates the closed test's 2^m intersections cost too much: Bonferroni levels are used."""


_COPULA_DRAWS = 1 << 15


_COPULA_SEED = 0  # the same draws every time: a decision does not depend on when it is made


_UNSAFE_CHANCE = float(special.ndtr(-2.0))
"""How likely the draws may put a parametric factor above its true value (two Monte Carlo standard errors)."""


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
    Monte Carlo standard errors, by the exact binomial count of draws
    below the level). Where too few draws fall below ``alpha`` to tell its
    quantile (``alpha`` under about 1.2e-4 for the 2^15 draws: a late look
    or a confidence of 0.9999), ``c_J = 1``. With ``correlation`` None, or more than
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
        rank = _safe_rank(self.alpha)
        if rank is None:  # too few draws below the level to tell its quantile: Bonferroni
            return 1.0
        tested = np.flatnonzero(weights > 0.0)
        ratio = (self._tails[:, tested] / weights[tested]).min(axis=1)
        return max(float(np.partition(ratio, rank)[rank]) / self.alpha, 1.0)


@functools.cache
def _safe_rank(alpha: float) -> int | None:
    """The order statistic of the fixed draws that lies at or below their ``alpha``-quantile but for a small chance.

    The largest ``k`` whose draw (0-based, ascending) is above the true
    ``alpha``-quantile with probability at most ``ndtr(-2)`` (two Monte
    Carlo standard errors), from the exact binomial count of draws below
    it. None when even the smallest draw is not that safe (``alpha`` times
    the draws below about 4, as at 1e-5): the levels are then Bonferroni's.
    """
    below = stats.binom(_COPULA_DRAWS, alpha)
    rank = int(below.ppf(_UNSAFE_CHANCE))
    while rank >= 0 and below.cdf(rank) > _UNSAFE_CHANCE:
        rank -= 1
    return rank if rank >= 0 else None


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
