"""Coverage and width of ``patternsearch.uncertainty.estimate`` on simulated class-sharing designs.

Run ``python examples/interval_calibration.py`` (400 runs per cell, several
minutes on two cores; ``--quick`` for a smoke run, ``--json`` for machine-readable
output). Every figure the README quotes about the intervals comes from it.

Each run redraws everything the estimand averages over: a design of ``tasks``
5-way tasks, each drawing 5 of ``units x 4`` classes (a character in 4
rotations; the unit is the character), the characters' effects, a task
effect, and 15 Bernoulli queries per way. A pattern's probability of being
right on a way is ``clip(base + unit effect + task effect, 0, 1)``; ``base``
0.99 puts it against the ceiling, where clipping makes the unit effects
skewed. Paired cells score the same queries with a baseline and a candidate:
the candidate is right on a query when ``V < p_candidate`` and the baseline
when ``U < p_baseline``, with ``V = U`` for 80% of the queries (both patterns
fail the same hard queries) and a fresh uniform otherwise; the candidate's
probability adds ``delta`` and a per-character effect on the difference, whose
standard deviation is the cell's ``unit_sd``. The true mean (over the
population of characters) follows in closed form from the normal
expectation of a clipped variable.

Columns: coverage of the one-sided 95% lower bound (new estimator, the
previous estimator, the naive ``sd / sqrt(n)``, and the oracle that knows the
sd of the mean), the new bound's mean distance below the mean divided by the
oracle's (``1.645 x`` the sd of the mean over the runs), the floor under
that width (:func:`narrowest_width`: no bound that covers at every unit
variance is narrower, so the oracle's width is out of reach wherever the data
cannot tell the unit variance from 0; ``nan`` for designs too uneven for it,
i.e. 10-50 tasks over 17-26 units), the share of runs in
which REML puts the unit variance at zero and the new bound's coverage in
those runs, and how often the bound misses at the smaller levels a
candidate holds when several are confirmed (2% and 0.75%: the bound at 98%
and 99.25%). Monte Carlo standard error of a coverage near 95%:
``sqrt(0.95 * 0.05 / runs)`` (1.1 points at 400 runs). ``--tails`` runs only
the confirmation's own design (20 characters, 600 paired tasks) at 800 runs
per cell, for those tail levels. ``--ceiling`` runs the most skewed cells
(3-point effects near 100%) at 1500 runs per cell and compares the skewness
correction with the estimated skewness against the same correction given the
true skewness of the mean (from 6000 further runs). ``--independent`` runs
tasks without a design (the independent-task path) near and away from the
ceiling, with the skewness correction and with Student's t alone. ``--prior-power`` swaps
the prior on the unit variance (0.5 as shipped) to show what another one trades.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import optimize, special, stats

from patternsearch import uncertainty
from patternsearch.uncertainty import TaskDesign, _membership, _Spectrum, estimate

WAYS, QUERIES, ROTATIONS = 5, 15, 4
TASK_SD, BASELINE_UNIT_SD, SAME_QUERY = 0.01, 0.01, 0.8
Z95 = float(stats.norm.ppf(0.95))
TAIL_LEVELS = (0.05, 0.02, 0.0075)
MAX_UNEVENNESS = 0.4  # width_floor's limit on a design's spread of contrast eigenvalues
CONFIRMATION_UNITS = 20  # the characters that decide: three quarters of omniglot-small's 26 test characters


@dataclass(frozen=True)
class Cell:
    """One simulated setting."""

    units: int
    tasks: int
    unit_sd: float
    base: float
    paired: bool
    delta: float = -0.005

    @property
    def kind(self) -> str:
        return ("paired" if self.paired else "accuracy") + (" ceiling" if self.base >= 0.985 else "")


def _clipped_mean(location: float, scale: float) -> float:
    """``E[clip(X, 0, 1)]`` for ``X ~ N(location, scale^2)``."""
    if scale == 0.0:
        return float(np.clip(location, 0.0, 1.0))

    def excess(threshold: float, sign: float) -> float:  # E[(sign * (X - threshold))+]
        d = sign * (location - threshold) / scale
        return sign * (location - threshold) * special.ndtr(d) + scale * math.exp(-d * d / 2) / math.sqrt(2 * math.pi)

    return float(location - excess(1.0, 1.0) + excess(0.0, -1.0))


def true_mean(cell: Cell) -> float:
    """The population mean score (or paired difference) of ``cell``."""
    if not cell.paired:
        return _clipped_mean(cell.base, math.hypot(cell.unit_sd, TASK_SD))
    baseline = math.hypot(BASELINE_UNIT_SD, TASK_SD)
    return (_clipped_mean(cell.base + cell.delta, math.hypot(baseline, cell.unit_sd))
            - _clipped_mean(cell.base, baseline))


def simulate(rng: np.random.Generator, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
    """One run: per-task scores and the (tasks, ways) class indices (unit = class // 4)."""
    classes = np.argpartition(rng.random((cell.tasks, ROTATIONS * cell.units)), WAYS, axis=1)[:, :WAYS]
    units = classes // ROTATIONS
    linear = cell.base + rng.normal(0.0, TASK_SD, (cell.tasks, 1))
    if not cell.paired:
        p = np.clip(linear + rng.normal(0.0, cell.unit_sd, cell.units)[units], 0.0, 1.0)
        return rng.binomial(QUERIES, p).sum(axis=1) / (QUERIES * WAYS), classes
    linear = linear + rng.normal(0.0, BASELINE_UNIT_SD, cell.units)[units]
    baseline = np.clip(linear, 0.0, 1.0)[..., None]
    candidate = np.clip(linear + cell.delta + rng.normal(0.0, cell.unit_sd, cell.units)[units], 0.0, 1.0)[..., None]
    shape = (cell.tasks, WAYS, QUERIES)
    u = rng.random(shape)
    v = np.where(rng.random(shape) < SAME_QUERY, u, rng.random(shape))
    return ((v < candidate).sum(axis=(1, 2)) - (u < baseline).sum(axis=(1, 2))) / (QUERIES * WAYS), classes


def design_of(classes: np.ndarray) -> TaskDesign:
    """The :class:`TaskDesign` of simulated class indices."""
    listed = classes.tolist()
    return TaskDesign(tuple(map(tuple, listed)), tuple(tuple(c // ROTATIONS for c in task) for task in listed))


def previous_lower_bound(scores: np.ndarray, classes: np.ndarray, units: int) -> float:
    """THE PREVIOUS ESTIMATOR (replaced; kept here only for comparison): 95% lower bound.

    Least-squares unit means, ``|w|^2 S + (1/n - k |w|^2) noise`` with a
    Welch-Satterthwaite dof (clamped at 1), and ``sd / sqrt(n)`` when the
    design is too thin or the estimate falls below ``noise / n``.
    """
    n = scores.size
    membership = np.zeros((n, units))
    np.add.at(membership, (np.repeat(np.arange(n), WAYS), (classes // ROTATIONS).ravel()), 1.0 / WAYS)
    membership = membership[:, membership.any(axis=0)]
    groups = membership.shape[1]
    variance, dof = scores.var(ddof=1) / n, n - 1.0
    beta, _, rank, _ = np.linalg.lstsq(membership, scores, rcond=None)
    if groups >= 2 and rank == groups and n - rank >= 2:
        residuals = scores - membership @ beta
        noise = float(residuals @ residuals) / (n - rank)
        centring = np.eye(groups) - 1.0 / groups
        share = float(np.trace(centring @ np.linalg.inv(membership.T @ membership) @ centring)) / (groups - 1)
        weights = membership.mean(axis=0)
        between, noise_coefficient = float(weights @ weights), 1.0 / n - share * float(weights @ weights)
        crossed = between * float(beta.var(ddof=1)) + noise_coefficient * noise
        if crossed > noise / n:
            variance = crossed
            dof = crossed**2 / ((between * float(beta.var(ddof=1))) ** 2 / (groups - 1)
                                + (noise_coefficient * noise) ** 2 / (n - rank))
        else:
            variance, dof = noise / n, float(n - rank)
    return float(scores.mean() - stats.t.ppf(0.95, max(dof, 1.0)) * math.sqrt(variance))


def run_cell(cell: Cell, runs: int, seed: int) -> dict[str, float]:
    """Coverage, width and zero-variance statistics of one cell over ``runs`` simulated studies."""
    rng = np.random.default_rng(seed)
    truth = true_mean(cell)
    means, new, old, naive, zero, unreliable = [], [], [], [], [], 0
    tails: list[list[float]] = []
    for _ in range(runs):
        scores, classes = simulate(rng, cell)
        result = estimate(scores, design_of(classes))
        unreliable += not result.reliable
        means.append(result.mean)
        new.append(result.lower_bound(0.95))
        tails.append([result.lower_bound(1.0 - level) for level in TAIL_LEVELS])
        old.append(previous_lower_bound(scores, classes, cell.units))
        naive.append(estimate(scores).lower_bound(0.95))
        zero.append(_unit_variance_at_zero(scores, classes))
    mean, new_bound, old_bound, zeros = np.array(means), np.array(new), np.array(old), np.array(zero)
    oracle = Z95 * float(mean.std())
    finite = np.isfinite(new_bound)
    return {**asdict(cell), "kind": cell.kind, "runs": runs, "truth": truth,
            "coverage": float(np.mean(new_bound <= truth)),
            "previous_coverage": float(np.mean(old_bound <= truth)),
            "naive_coverage": float(np.mean(np.array(naive) <= truth)),
            "oracle_coverage": float(np.mean(mean - oracle <= truth)),
            "width_ratio": float(np.mean((mean - new_bound)[finite]) / oracle) if finite.any() else math.inf,
            "width_floor": width_floor(cell),
            "zero_share": float(zeros.mean()),
            "zero_coverage": float(np.mean(new_bound[zeros] <= truth)) if zeros.any() else math.nan,
            "previous_zero_coverage": float(np.mean(old_bound[zeros] <= truth)) if zeros.any() else math.nan,
            "miss_rates": {str(level): float(np.mean(np.array(tails)[:, i] > truth))
                           for i, level in enumerate(TAIL_LEVELS)},
            "unreliable": unreliable}


@functools.cache
def variance_ratio(unit_sd: float, base: float, paired: bool, delta: float) -> float:
    """``gamma = s2 / tau2`` of a cell's scores: REML's estimate on one large design (200 units, 8000 tasks).

    The ratio does not depend on the number of units or tasks, only on how the
    scores are made (clipping near the ceiling makes the crossed model an
    approximation, which this fits as well as it can).
    """
    cell = Cell(200, 8000, unit_sd, base, paired, delta)
    scores, classes = simulate(np.random.default_rng(7), cell)
    spectrum = _Spectrum.of(scores, *_membership(design_of(classes).units or ()))
    gammas = np.concatenate([[0.0], np.logspace(-4.0, 3.0, 701)])
    loglik, _ = spectrum.profile(gammas)
    return float(gammas[np.argmax(loglik)])


@dataclass(frozen=True)
class BalancedDesign:
    """A crossed design reduced to what a bound on its mean can use (see :func:`narrowest_width`).

    Attributes:
        contrasts: Unit contrasts ``r``: the rank of ``A'A`` less the mean's direction.
        residual: Residual degrees of freedom ``m``: tasks less that rank.
        eigenvalue: The contrasts' mean eigenvalue ``l`` of ``A'A``.
        share: ``|w|^2``, the unit variance's weight in the mean's variance.
        tasks: ``n``.
        unevenness: Coefficient of variation of the contrasts' eigenvalues (0 when balanced).
    """

    contrasts: int
    residual: int
    eigenvalue: float
    share: float
    tasks: int
    unevenness: float = 0.0

    @classmethod
    def of(cls, cell: Cell) -> BalancedDesign:
        """The reduction of one design drawn for ``cell`` (seeded: the same design every call)."""
        _, classes = simulate(np.random.default_rng(11), cell)
        membership, gram = _membership(design_of(classes).units or ())
        lam = np.linalg.eigvalsh(gram)
        lam = lam[lam > 1e-9 * lam[-1]]
        contrasts = lam[:-1]
        return cls(contrasts.size, cell.tasks - lam.size, float(contrasts.mean()) if contrasts.size else 0.0,
                   float(np.sum(membership.mean(axis=0) ** 2)), cell.tasks,
                   float(contrasts.std() / contrasts.mean()) if contrasts.size else 0.0)


def narrowest_width(design: BalancedDesign, gamma: float, level: float = 0.95, bins: int = 80, gammas: int = 64,
                    nodes: int = 16) -> float:
    """The narrowest mean width, over the oracle's, of a lower bound that covers at every unit variance.

    The oracle knows the unit variance ``s2``; a bound must cover whatever it
    is. Scores are Gaussian, ``gamma = s2 / tau2``, and the design balanced:
    then ``S``, the unit contrasts' sum of squares (``tau2 (1 + gamma l)
    chi2(r)``), and ``R``, the residual's (``tau2 chi2(m)``), are all the data
    say about the variances, and every scale-equivariant bound is
    ``mean - sqrt(R) f(S / R)``; its coverage at a unit variance is concave in
    ``f`` and its mean width linear, so the narrowest ``f`` (piecewise
    constant over ``bins`` bins of ``S / R``) covering at 0, at ``gamma`` and
    at ``gammas`` unit variances up to 10^4 / l is a convex program. Without
    residual degrees of freedom (``m = 0``) the only equivariant bound is
    ``mean - k sqrt(S)``, with the smallest ``k`` that covers everywhere. Where
    the data cannot tell ``s2`` from 0 no bound can have the oracle's width.
    """
    if design.contrasts == 0:
        return math.inf
    r, lam, n = design.contrasts, design.eigenvalue, design.tasks
    ratios = np.concatenate([[0.0, gamma], np.geomspace(1e-3 / lam, 1e4 / lam, gammas)])
    sd = np.sqrt(ratios * design.share + 1.0 / n)
    if design.residual == 0:
        spread = np.sqrt(stats.chi2.ppf((np.arange(nodes * 8) + 0.5) / (nodes * 8), r))  # sqrt(chi2(r)) nodes
        covering = [optimize.brentq(lambda k, i=i: float(np.mean(special.ndtr(
            k * spread * math.sqrt(1.0 + ratios[i] * lam) / sd[i]))) - level, 1e-9, 1e9) for i in range(ratios.size)]
        return max(covering) * float(spread.mean()) * math.sqrt(1.0 + gamma * lam) / (Z95 * float(sd[1]))
    residuals = stats.chi2.ppf((np.arange(nodes) + 0.5) / nodes, design.residual)
    edges = np.concatenate([[0.0], np.geomspace(stats.chi2.ppf(1e-7, r) / residuals.max(),
                                                (1.0 + ratios.max() * lam) * stats.chi2.ppf(1 - 1e-7, r)
                                                / residuals.min(), bins - 1), [np.inf]])

    def bin_probabilities(scales: np.ndarray) -> np.ndarray:  # [unit variance, residual node, bin of S / R]
        cdf = stats.chi2.cdf(edges[None, None, :] * residuals[None, :, None] / scales[:, None, None], r)
        return np.diff(cdf, axis=2) / residuals.size

    probabilities, roots = bin_probabilities(1.0 + ratios * lam), np.sqrt(residuals)
    cost = (probabilities[1] * roots[:, None]).sum(axis=0)

    def standardized(log_f: np.ndarray) -> np.ndarray:
        return roots[None, :, None] * np.exp(log_f)[None, None, :] / sd[:, None, None]

    def coverage(log_f: np.ndarray) -> np.ndarray:
        return (probabilities * special.ndtr(standardized(log_f))).sum(axis=(1, 2)) - level

    def coverage_gradient(log_f: np.ndarray) -> np.ndarray:
        z = standardized(log_f)
        return (probabilities * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * z).sum(axis=1)

    middle = np.concatenate([[edges[1] / 2], np.sqrt(edges[1:-2] * edges[2:-1]), [edges[-2] * 2]])
    m = design.residual
    start = np.log(3.0 * np.sqrt(3.0 * middle * m / r / lam * design.share + 1.0 / n) / math.sqrt(m))
    solution = optimize.minimize(lambda v: cost @ np.exp(v), start, jac=lambda v: cost * np.exp(v), method="SLSQP",
                                 constraints=[{"type": "ineq", "fun": coverage, "jac": coverage_gradient}],
                                 options={"maxiter": 1000, "ftol": 1e-12})
    if not solution.success:
        raise RuntimeError(f"the narrowest bound of {design} did not converge: {solution.message}")
    return float(cost @ np.exp(solution.x)) / (Z95 * float(sd[1]))


def width_floor(cell: Cell) -> float:
    """:func:`narrowest_width` for a design drawn for ``cell``, at the cell's fitted :func:`variance_ratio`.

    NaN for designs too uneven for the balanced reduction (the contrasts'
    eigenvalues vary by more than ``MAX_UNEVENNESS``, as with 10-50 tasks over
    17-26 units): there the eigenvalues' spread itself tells unit variance
    from task variance, a bound can use it, and the reduction's width is no
    floor (REML's bound is narrower than it at 26 units and 20 tasks).
    """
    design = BalancedDesign.of(cell)
    if design.unevenness > MAX_UNEVENNESS:
        return math.nan
    return narrowest_width(design, variance_ratio(cell.unit_sd, cell.base, cell.paired, cell.delta))


def _unit_variance_at_zero(scores: np.ndarray, classes: np.ndarray) -> bool:
    """Whether REML puts the unit variance at zero: the profile likelihood falls from gamma = 0."""
    spectrum = _Spectrum.of(scores, *_membership(design_of(classes).units or ()))
    loglik, _ = spectrum.profile(np.array([0.0, 1e-6 / float(np.median(spectrum.lam))]))
    return bool(loglik[0] >= loglik[1])


def power(unit_sd: float, runs: int, seed: int, units: int = 17, tasks: int = 600) -> dict[str, float]:
    """Share of runs confirming a candidate whose true paired loss is 0.6 points at a 1-point margin."""
    delta = optimize.brentq(lambda d: true_mean(Cell(units, tasks, unit_sd, 0.96, True, d)) + 0.006, -0.05, 0.05)
    cell = Cell(units, tasks, unit_sd, 0.96, True, delta)
    rng = np.random.default_rng(seed)
    means, new, old = [], [], []
    for _ in range(runs):
        scores, classes = simulate(rng, cell)
        means.append(scores.mean())
        new.append(estimate(scores, design_of(classes)).lower_bound(0.95))
        old.append(previous_lower_bound(scores, classes, units))
    mean = np.array(means)
    return {"units": units, "tasks": tasks, "unit_sd": unit_sd, "true_difference": true_mean(cell), "runs": runs,
            "new": float(np.mean(np.array(new) > -0.01)), "previous": float(np.mean(np.array(old) > -0.01)),
            "oracle": float(np.mean(mean - Z95 * mean.std() > -0.01))}


def true_skewness(cell: Cell, runs: int, seed: int) -> float:
    """Skewness of the mean's sampling distribution, from ``runs`` simulated studies."""
    rng = np.random.default_rng(seed)
    return float(stats.skew([simulate(rng, cell)[0].mean() for _ in range(runs)]))


def run_skewed_cell(cell: Cell, runs: int, seed: int) -> dict[str, float]:
    """Coverage of the 95% bound with the estimated skewness, without the correction, and given the true skewness.

    ``variance_link`` is ``cov(mean, standard_error^2)`` over the mean's third
    central moment: Johnson's correction assumes 1 (the link of a sample
    mean and variance), so near 1 it models how the estimated spread moves
    with the mean, and what it lacks is the skewness itself. The estimated
    skewness is smaller on average, because a run whose characters include
    none of the rare badly-handled ones shows neither the skew nor the spread.
    """
    truth, skewness = true_mean(cell), true_skewness(cell, 4 * runs, seed + 10_000)
    rng = np.random.default_rng(seed)
    means, estimated, variances, bounds = [], [], [], []
    for _ in range(runs):
        scores, classes = simulate(rng, cell)
        result = estimate(scores, design_of(classes))
        means.append(result.mean)
        estimated.append(result.skewness)
        variances.append(result.standard_error**2)
        bounds.append([result.lower_bound(0.95), replace(result, skewness=0.0).lower_bound(0.95),
                       replace(result, skewness=skewness).lower_bound(0.95)])
    mean, bound = np.array(means), np.array(bounds)
    covered = np.mean(bound <= truth, axis=0)
    link = float(np.mean((mean - mean.mean()) * (np.array(variances) - np.mean(variances)))
                 / np.mean((mean - mean.mean()) ** 3))
    return {**asdict(cell), "kind": cell.kind, "runs": runs, "truth": truth, "true_skewness": skewness,
            "mean_estimated_skewness": float(np.mean(estimated)), "variance_link": link, "coverage": float(covered[0]),
            "coverage_without_correction": float(covered[1]), "coverage_true_skewness": float(covered[2]),
            "width_ratio": float(np.mean(mean - bound[:, 0]) / (Z95 * float(mean.std())))}


def skewed_cells() -> list[Cell]:
    """The most skewed settings: 3-point character effects near 100%, plain and paired, 9 to 26 characters."""
    return [Cell(units, tasks, 0.03, 0.99, paired) for (units, tasks), paired in itertools.product(
        [(9, 50), (9, 600), (17, 50), (17, 600), (CONFIRMATION_UNITS, 600), (26, 200)], [False, True])]


def print_skewed(cells: list[dict[str, float]], runs: int) -> None:
    """The ``--ceiling`` table."""
    print(f"One-sided 95% lower bounds near 100% with 3-point character effects, {runs} runs per cell "
          f"(Monte Carlo se of a coverage near 95%: {math.sqrt(0.95 * 0.05 / runs):.4f})")
    print(f"{'units':>5} {'tasks':>5} {'kind':<17} {'skew':>6} {'est.':>6} {'cover':>6} {'no corr':>7} "
          f"{'true sk':>7} {'width':>6} {'link':>5}")
    for c in cells:
        print(f"{c['units']:>5} {c['tasks']:>5} {c['kind']:<17} {c['true_skewness']:>6.2f} "
              f"{c['mean_estimated_skewness']:>6.2f} {c['coverage']:>6.3f} {c['coverage_without_correction']:>7.3f} "
              f"{c['coverage_true_skewness']:>7.3f} {c['width_ratio']:>6.2f} {c['variance_link']:>5.2f}")
    print("skew: the mean's true skewness; est.: the estimate's mean; cover: the bound as shipped; no corr: without "
          "the skewness correction; true sk: the correction given the true skewness; width: over the oracle's; "
          "link: cov(mean, se^2) over the mean's third central moment (Johnson's correction assumes 1)")
    ranges = {name: f"{min(c[key] for c in cells):.3f}-{max(c[key] for c in cells):.3f}" for name, key in
              [("as shipped", "coverage"), ("given the true skewness", "coverage_true_skewness"),
               ("without correction", "coverage_without_correction")]}
    print("coverage " + "; ".join(f"{name}: {span}" for name, span in ranges.items()))


def run_independent_cell(base: float, task_sd: float, tasks: int, runs: int, seed: int) -> dict[str, float]:
    """Coverage and width of the bound for tasks without a design (no shared classes), with and without skew.

    Each task is right on each of its 75 queries with probability
    ``clip(base + N(0, task_sd^2), 0, 1)``; near the ceiling its score is
    left-skewed, and ``without correction`` is Student's t alone. ``no_spread``
    is the share of runs whose scores are all equal (the bound is then the mean).
    """
    rng = np.random.default_rng(seed)
    truth = _clipped_mean(base, task_sd)
    chance = np.clip(base + rng.normal(0.0, task_sd, (runs, tasks)), 0.0, 1.0)
    scores = rng.binomial(QUERIES * WAYS, chance) / (QUERIES * WAYS)
    results = [estimate(row) for row in scores]
    bounds = np.array([[r.lower_bound(0.95), replace(r, skewness=0.0).lower_bound(0.95)] for r in results])
    covered = np.mean(bounds <= truth, axis=0)
    mean = scores.mean(axis=1)
    return {"base": base, "task_sd": task_sd, "tasks": tasks, "runs": runs, "truth": truth,
            "coverage": float(covered[0]), "coverage_without_correction": float(covered[1]),
            "width_ratio": float(np.mean(mean - bounds[:, 0]) / (Z95 * float(mean.std()))),
            "no_spread": float(np.mean(np.ptp(scores, axis=1) == 0.0))}


def independent_cells() -> list[tuple[float, float, int]]:
    """``(base, task sd, tasks)``: from well below the ceiling to against it, 5 to 200 tasks."""
    return list(itertools.product([0.8, 0.96, 0.99, 0.995], [0.01, 0.03], [5, 10, 20, 50, 200]))


def print_independent(cells: list[dict[str, float]], runs: int) -> None:
    """The ``--independent`` table."""
    print(f"One-sided 95% lower bounds for independent tasks (no design), {runs} runs per cell "
          f"(Monte Carlo se of a coverage near 95%: {math.sqrt(0.95 * 0.05 / runs):.4f})")
    print(f"{'base':>5} {'task sd':>7} {'tasks':>5} {'cover':>6} {'no corr':>7} {'width':>6} {'equal':>6}")
    for c in cells:
        print(f"{c['base']:>5.3f} {c['task_sd']:>7.2f} {c['tasks']:>5} {c['coverage']:>6.3f} "
              f"{c['coverage_without_correction']:>7.3f} {c['width_ratio']:>6.2f} {c['no_spread']:>6.3f}")
    print("cover: the bound as shipped; no corr: Student's t alone; width: over the oracle's; equal: share of runs "
          "whose scores are all equal")
    for label, chosen in [("5-10 tasks", [c for c in cells if c["tasks"] <= 10]),
                          ("20-200 tasks", [c for c in cells if c["tasks"] >= 20])]:
        print(f"{label}: coverage {min(c['coverage'] for c in chosen):.3f}-{max(c['coverage'] for c in chosen):.3f}"
              f" as shipped, {min(c['coverage_without_correction'] for c in chosen):.3f}-"
              f"{max(c['coverage_without_correction'] for c in chosen):.3f} without correction")


def grid(quick: bool, tails: bool = False) -> list[Cell]:
    """The calibration grid (a few cells with ``quick``; the confirmation's design with ``tails``)."""
    if tails:
        return [Cell(CONFIRMATION_UNITS, 600, sd, base, True)
                for base, sd in itertools.product([0.96, 0.99], [0.0, 0.01, 0.03])]
    if quick:
        return [Cell(17, 20, 0.01, 0.96, False), Cell(17, 600, 0.0, 0.99, True), Cell(9, 10, 0.01, 0.96, False)]
    kinds = [(0.96, False), (0.99, False), (0.99, True)]
    return [Cell(u, t, sd, base, paired) for u, t, sd, (base, paired)
            in itertools.product([9, 17, 26], [10, 20, 50, 200, 600], [0.0, 0.01, 0.03], kinds)]


def summary(cells: list[dict[str, float]], runs: int) -> dict[str, str]:
    """The ranges the README quotes: coverage within 3 Monte Carlo s.e., width over the floor and the oracle."""
    def spread(values: list[float]) -> str:
        return f"{min(values):.2f}-{max(values):.2f} (median {float(np.median(values)):.2f}, {len(values)} cells)" \
            if values else "no cells"

    floored = [c for c in cells if not math.isnan(c["width_floor"])]
    covered = sum(c["coverage"] >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / runs) for c in cells)
    lowest = min(cells, key=lambda c: c["coverage"])
    return {"coverage within 3 s.e. of 95% or above": f"{covered} of {len(cells)} cells",
            "lowest coverage": f"{lowest['coverage']:.3f} ({lowest['units']} units, {lowest['tasks']} tasks, unit sd "
                               f"{lowest['unit_sd']:.2f}, {lowest['kind']})",
            "width / oracle, all cells": spread([c["width_ratio"] for c in cells]),
            "width / floor, unit effects": spread([c["width_ratio"] / c["width_floor"] for c in floored
                                                   if c["unit_sd"] > 0]),
            "width / floor, no unit effect": spread([c["width_ratio"] / c["width_floor"] for c in floored
                                                     if c["unit_sd"] == 0]),
            "floor / oracle, no unit effect": spread([c["width_floor"] for c in floored if c["unit_sd"] == 0]),
            "width / oracle, 20 tasks or fewer": spread([c["width_ratio"] for c in cells if c["tasks"] <= 20])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None,
                        help="simulated studies per cell (400; 800 with --tails, 1500 with --ceiling, 2000 with "
                             "--independent)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="three cells, 40 runs: a smoke test")
    modes.add_argument("--tails", action="store_true",
                        help=f"only the confirmation's design ({CONFIRMATION_UNITS} units, 600 paired tasks), "
                             "800 runs: tail levels")
    modes.add_argument("--independent", action="store_true",
                       help="tasks without a design (no shared classes), 80%%-99.5%% accuracy, 2000 runs: the "
                            "skewness correction against Student's t alone")
    modes.add_argument("--ceiling", action="store_true",
                        help="only the most skewed cells (3-point effects near 100%%), 1500 runs: the skewness "
                             "correction against the true skewness")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-power", type=float, default=uncertainty._PRIOR_POWER,
                        help="the prior p(s2) ~ s2^(power - 1) on the unit variance (default %(default)s, flat on "
                             "the unit sd, as shipped): less puts more mass near 0, the trade-off in "
                             "docs/selection.md")
    args = parser.parse_args()
    uncertainty._PRIOR_POWER = args.prior_power
    runs = args.runs or (40 if args.quick else 800 if args.tails else 1500 if args.ceiling else
                         2000 if args.independent else 400)
    started = time.perf_counter()
    if args.independent:
        independent = [run_independent_cell(*cell, runs, args.seed + i) for i, cell in enumerate(independent_cells())]
        if args.json:
            print(json.dumps({"runs": runs, "cells": independent, "seconds": time.perf_counter() - started}))
        else:
            print_independent(independent, runs)
            print(f"\n{time.perf_counter() - started:.0f} s")
        return
    if args.ceiling:
        skewed = [run_skewed_cell(cell, runs, args.seed + i) for i, cell in enumerate(skewed_cells())]
        if args.json:
            print(json.dumps({"runs": runs, "prior_power": args.prior_power, "cells": skewed,
                              "seconds": time.perf_counter() - started}))
        else:
            print_skewed(skewed, runs)
            print(f"\n{time.perf_counter() - started:.0f} s")
        return
    cells = [run_cell(cell, runs, args.seed + i) for i, cell in enumerate(grid(args.quick, args.tails))]
    powers = [] if args.tails else [power(sd, runs, args.seed + 1000 + i) for i, sd in enumerate([0.0, 0.01])]
    if args.json:
        print(json.dumps({"runs": runs, "prior_power": args.prior_power, "cells": cells, "power": powers,
                          "summary": summary(cells, runs),
                          "seconds": time.perf_counter() - started}, allow_nan=True))
        return
    se = math.sqrt(0.95 * 0.05 / runs)
    print(f"One-sided 95% lower bounds, {runs} runs per cell (Monte Carlo se of a coverage near 95%: {se:.3f}; "
          f"prior power {args.prior_power})")
    print(f"{'units':>5} {'tasks':>5} {'unit sd':>7} {'kind':<17} {'new':>6} {'prev':>6} {'naive':>6} {'oracle':>6} "
          f"{'width':>6} {'floor':>6} {'s2=0':>5} {'cov|0':>6} {'prev|0':>6} {'miss2%':>6} {'miss.75%':>8}")
    for c in cells:
        print(f"{c['units']:>5} {c['tasks']:>5} {c['unit_sd']:>7.2f} {c['kind']:<17} {c['coverage']:>6.3f} "
              f"{c['previous_coverage']:>6.3f} {c['naive_coverage']:>6.3f} {c['oracle_coverage']:>6.3f} "
              f"{c['width_ratio']:>6.2f} {c['width_floor']:>6.2f} {c['zero_share']:>5.2f} {c['zero_coverage']:>6.3f} "
              f"{c['previous_zero_coverage']:>6.3f} {c['miss_rates']['0.02']:>6.3f} {c['miss_rates']['0.0075']:>8.3f}")
    print("width: mean (mean - lower bound) / (1.645 x sd of the mean); floor: the narrowest width any bound that "
          "covers at every unit variance can have here (balanced design, Gaussian scores); s2=0: share of runs with "
          "the REML unit variance at zero; cov|0, prev|0: new and previous coverage in those runs; miss2%, "
          "miss.75%: share of runs whose 98% and 99.25% bounds are above the truth")
    for name, value in summary(cells, runs).items():
        print(f"{name}: {value}")
    if not powers:
        print(f"\n{time.perf_counter() - started:.0f} s")
        return
    print("\nPower: P(lower bound of a paired difference with true mean -0.006 > -0.01), 17 units, 600 tasks")
    print(f"{'unit sd':>7} {'new':>6} {'prev':>6} {'oracle':>6}")
    for p in powers:
        print(f"{p['unit_sd']:>7.2f} {p['new']:>6.3f} {p['previous']:>6.3f} {p['oracle']:>6.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
