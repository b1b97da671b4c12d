"""Step 1, on validation only: the front of plausible patterns and the candidates picked from it.

Winner's-curse corrected (Tweedie), judged on how far a new validation group may move them, an anchor among
the plain patterns; docs/selection.md explains the choices and measures them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ..uncertainty import TaskDesign, estimate
from ._graphs import (
    Graph,
    power_graph,
    predicted_speedup,
)
from ._records import CandidateTest, Proposal

DEFAULT_CANDIDATES = 5
"""Candidates ``select`` tests at most by default."""


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
        pattern's corrected difference is moved down by how far a new group
        may lie below its mean (:func:`new_group_gap`): the test split is a
        new group, and patterns that validation's groups disagree on (more
        than noise would make them) are the ones a new group moves.
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
            gap = new_group_gap(differences, task_design.groups, error, confidence)
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
        corrected = winners_curse_corrected(proposal.val_difference, error, spread, typical) + gap
        bound = corrected - quantile * error
        if bound >= -max_degradation:
            scored.append((proposal, corrected, bound, error))
    if not scored:
        return []
    anchor = max([item for item in scored if item[0].plain] or scored, key=lambda item: item[2])
    faster = sorted((item for item in scored if item[0].speedup > anchor[0].speedup),
                    key=lambda item: (-item[0].speedup, -item[2]))
    front: list[tuple[Proposal, float, float, float]] = []
    for item in faster:  # fastest first: keep a pattern only if more reliable than every faster one kept
        if not front or item[2] > front[-1][2]:
            front.append(item)
    front.append(anchor)
    return [CandidateTest(p.pattern, p.trial, p.val_difference, p.speedup, val_corrected=corrected,
                          val_lower_bound=bound, val_standard_error=error) for p, corrected, bound, error in front]


def group_differences(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None) -> dict[int, float]:
    """The paired difference on each unit group (Omniglot: alphabet), by least squares; empty where none can be told.

    Tasks mix groups (a task's five characters come from several
    alphabets), so each group's difference is the least-squares fit of the
    per-task differences on each task's share of ways from that group.
    Empty without groups, with one group, or when the shares cannot
    separate them.
    """
    fit = _fit_for(differences, groups)
    if fit is None or fit.rank < len(fit.names):
        return {}
    return dict(zip(fit.names, map(float, fit.solve @ np.asarray(differences, dtype=np.float64)), strict=True))


GROUP_TEST_LEVEL = 0.2
"""With no group effect, a pattern's validation is moved down by :func:`new_group_gap` with this probability.

Chosen on ``examples/group_correction.py``: at 0.05 a frozen-head pattern of the 2026-12-06 case topped the
front twice as often (docs/selection.md, "How far a new alphabet may lie").
"""


def group_variance(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None) -> float:
    """How much the paired difference varies between unit groups (Omniglot: alphabets), beyond what noise explains.

    The model: task ``t``'s difference is ``mu + sum_g s[t, g] * b_g + e_t``,
    ``s[t, g]`` the share of its ways from group ``g``, the group effects
    ``b_g`` drawn with variance ``v`` (a new group draws another), ``e_t``
    independent noise. Fitting the shares by least squares explains
    ``Q = RSS_0 - RSS_1`` more than the mean alone, ``E[Q] = (r - 1) tau^2
    + v T`` (``r`` the shares' rank, ``tau^2`` the noise variance, ``T``
    their summed squared deviations from their means). Returned:
    ``max(0, Q - (r - 1) F tau^2) / T``, with ``F`` the ``1 -``
    :data:`GROUP_TEST_LEVEL` quantile of ``F(r - 1, n - r)`` and ``tau^2``
    the residual variance: the noise's quantile, not its mean, is taken
    away, so with no group effect the estimate is 0 with probability
    ``1 -`` :data:`GROUP_TEST_LEVEL` (exactly, for normal independent
    noise), and a group effect the F-test of the shares detects is kept,
    less that quantile. Groups the shares cannot tell apart (fewer tasks
    than groups, groups always drawn together) count through the contrasts
    they can; 0 with one group, no groups, or no residual degrees of freedom.
    """
    fit = _fit_for(differences, groups)
    if fit is None:
        return 0.0
    values = np.asarray(differences, dtype=np.float64)
    centred = values - values.mean()
    residual = centred - fit.projection @ centred
    unexplained = float(residual @ residual)
    explained = float(centred @ centred) - unexplained
    noise = fit.f_quantile * (fit.rank - 1) * unexplained / (values.size - fit.rank)
    return max(explained - noise, 0.0) / fit.spread


def new_group_gap(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None, standard_error: float,
                  confidence: float) -> float:
    """How far below its validation mean a pattern's difference on a new unit group may lie (0 or negative).

    With :func:`group_variance` ``v`` and the validation mixture's group
    weights ``w`` (each group's mean share), a new group's difference
    scatters around the validation mean with variance
    ``se^2 + v (1 + |w|^2)`` (``se`` the mean's own standard error, ``|w|^2 v``
    what validation's own mixture of groups adds). The gap is
    ``-z (sqrt(se^2 + v (1 + |w|^2)) - se)``, ``z`` the ``confidence``
    quantile of the normal, so that the mean plus the gap, less ``z se``,
    is a lower prediction bound for a new group. Error properties
    (``examples/group_correction.py``, 200 five-way tasks, 1 to 20 groups;
    docs/selection.md): with no group effect the gap is 0 with probability
    ``1 -`` :data:`GROUP_TEST_LEVEL` (0.8) whatever the number of groups,
    its mean 0.6-0.9 of the pattern's standard errors (the least favourable
    group's coefficient, the rule before, lay 1.4 of them below the mean at
    2 groups and 9.9 at 10, on every pattern); a group effect is caught as
    often as the shares' F-test detects it (about half of the patterns with
    group effects of 1.5 points sd), and then moves the bound by about ``z``
    times the effect's standard deviation (3-4 standard errors there).
    """
    fit = _fit_for(differences, groups)
    variance = group_variance(differences, groups)
    if fit is None or not variance > 0.0 or not math.isfinite(standard_error):
        return 0.0
    quantile = float(special.ndtri(confidence))
    spread = math.sqrt(standard_error**2 + variance * (1.0 + fit.mixture))
    return -quantile * (spread - standard_error)


@dataclass(frozen=True)
class _GroupFit:
    """What :func:`group_variance` needs of a design's group shares (the same for every pattern; cached)."""

    names: tuple[int, ...]
    solve: np.ndarray  # least-squares coefficients per unit of difference: coefficients = solve @ differences
    projection: np.ndarray  # onto the centred shares' span
    rank: int  # of the shares (with the intercept they contain)
    spread: float  # summed squared deviations of the shares from their means
    mixture: float  # |w|^2, w each group's mean share
    f_quantile: float


def _fit_for(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None) -> _GroupFit | None:
    """:func:`_group_fit` of ``groups`` where they are one per difference; None otherwise."""
    if groups is None or len(groups) != np.asarray(differences).size:
        return None
    return _group_fit(groups)


@functools.lru_cache(maxsize=16)
def _group_fit(groups: tuple[tuple[int, ...], ...]) -> _GroupFit | None:
    """The least-squares fit of a design's group shares; None with fewer than two groups or no residual."""
    names = tuple(sorted({g for task in groups for g in task}))
    if len(names) < 2:
        return None
    shares = np.array([[task.count(g) / len(task) for g in names] for task in groups])
    centred = shares - shares.mean(axis=0)
    rank = int(np.linalg.matrix_rank(shares))
    if rank < 2 or rank >= len(groups):
        return None
    solve = np.linalg.pinv(shares)
    projection = centred @ np.linalg.pinv(centred)
    for array in (solve, projection):
        array.flags.writeable = False
    return _GroupFit(names, solve, projection, rank, float((centred * centred).sum()),
                     float((shares.mean(axis=0) ** 2).sum()),
                     float(stats.f.isf(GROUP_TEST_LEVEL, rank - 1, len(groups) - rank)))


def winners_curse_corrected(difference: float, standard_error: float, compared: np.ndarray,
                            bandwidth: float) -> float:
    """A validation difference corrected for the winner's curse by Tweedie's formula.

    ``difference + se^2 * d/dx log f(difference)``, ``f`` the Gaussian
    kernel density (bandwidth ``bandwidth``, the typical standard error) of
    the ``compared`` differences: a difference on top of a crowd of similar
    ones is pulled toward the crowd. Unchanged with fewer than two compared.
    """
    return difference + standard_error**2 * _log_density_slope(difference, np.asarray(compared, dtype=np.float64),
                                                                bandwidth)


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
