"""Uncertainty of a mean over few-shot tasks that share classes.

Tasks drawn from one split share its classes: in ``omniglot-small`` every test
task draws 5 of Latin's 104 classes, which come from 26 characters. A class
that a pattern handles badly lowers every task it appears in, so task scores
are correlated and the usual ``sd / sqrt(n)`` understates the uncertainty.

:func:`estimate` reports the plain mean of the scores and bounds it with a
crossed random-effects model: the score of task ``t`` is
``mu + sum_c A[t, c] * u_c + e_t``, where ``A[t, c]`` is the share of the
task's ways drawn from unit ``c`` (:attr:`Task.units`, the character by
default), ``u_c`` has variance ``s2`` and ``e_t`` variance ``tau2``. The mean
then has variance ``phi = s2 * |w|^2 + tau2 / n`` with ``w = A.mean(0)``.

1. The eigen-decomposition of ``A'A`` turns the scores into ``r`` independent
   components of variance ``s2 * lambda_i + tau2`` plus a residual with
   ``n - r`` degrees of freedom, so the REML likelihood of ``gamma = s2 / tau2``
   (``tau2`` profiled out) costs O(r) per value of ``gamma``.
2. ``gamma`` is integrated over a log grid with weights ``REML likelihood x
   prior``, the prior being flat on the unit standard deviation
   (``p(s2) ~ s2^-1/2``). Each grid point gives ``phi(gamma)`` and a Student-t
   with ``n - 1`` dof for the mean; the bound is the quantile of that mixture.
   Averaging over ``gamma`` instead of plugging in its estimate keeps the bound
   honest when ``s2`` is estimated at zero but the data cannot rule out a
   sizeable one (few tasks per unit, few units); it costs width when the unit
   effects are truly absent (see ``examples/interval_calibration.py``).
3. :class:`Estimate` summarises the mixture by the ``standard_error`` and
   ``dof`` of the Student-t that has the same one-sided 95% bound and the same
   two-sided 95% half-width (``lower_bound(0.95)`` and ``ci95`` are exact;
   other levels use that t).
4. Near 100% accuracy unit effects are skewed (a pattern loses on a few
   characters), and a Student-t bound then covers less than it says.
   ``lower_bound`` subtracts Johnson's (1978) correction for the mean's third
   cumulant, estimated by moments of the crossed design, whenever it lowers
   the bound; ``half_width`` stays symmetric. The skew of units the tasks
   happened not to draw cannot be estimated, so with few units and strong
   skew the bound still covers a little less than it says (0.931-0.953 for
   3-point unit effects at 99% accuracy over 9-26 units:
   ``examples/interval_calibration.py --ceiling``).

Without a design the tasks count as independent: ``sd / sqrt(n)`` with
``n - 1`` dof, and the same skewness correction with the mean's third
cumulant ``k3 / n^2`` (``k3`` the unbiased k-statistic of the scores). When
the data cannot support an interval (one task, or all tasks from a single
unit) the estimate is marked unreliable and its bounds are infinite.
``examples/interval_calibration.py`` prints the coverage and width of these
bounds on simulated Bernoulli-query designs (``--independent`` for tasks
without a design), and ``tests/test_uncertainty.py`` checks them.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from threadpoolctl import ThreadpoolController

from .benchmarks import Task


@dataclass(frozen=True)
class TaskDesign:
    """Which classes and independent units each task drew (None for tasks without classes).

    ``groups``: the group of each way's unit (Omniglot: the alphabet), when known.
    """

    classes: tuple[tuple[int, ...], ...] | None
    units: tuple[tuple[int, ...], ...] | None
    groups: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def of(cls, tasks: Sequence[Task]) -> TaskDesign:
        """The design of ``tasks``; tasks without classes give an empty design."""
        if not tasks or any(t.classes is None or t.units is None for t in tasks):
            return cls(None, None)
        groups = None if any(t.groups is None for t in tasks) else tuple(t.groups for t in tasks)
        return cls(tuple(t.classes for t in tasks), tuple(t.units for t in tasks), groups)  # type: ignore[misc,arg-type]

    @classmethod
    def none(cls) -> TaskDesign:
        """Independent tasks (no shared classes known)."""
        return cls(None, None)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TaskDesign:
        """The design of the tasks at ``indices``."""
        if self.classes is None or self.units is None:
            return self
        return TaskDesign(tuple(self.classes[i] for i in indices), tuple(self.units[i] for i in indices),
                          None if self.groups is None else tuple(self.groups[i] for i in indices))

    def distinct_classes(self) -> int | None:
        """How many distinct classes the tasks drew."""
        return None if self.classes is None else len({c for task in self.classes for c in task})

    def distinct_units(self) -> int | None:
        """How many distinct independent units the tasks drew."""
        return None if self.units is None else len({u for task in self.units for u in task})


def support(tasks: int, classes: int | None, units: int | None) -> str:
    """``N tasks, C classes`` (and the independent units when they differ from the classes)."""
    text = f"{tasks} tasks"
    if classes is not None:
        text += f", {classes} classes"
        if units is not None and units != classes:
            text += f" from {units} independent units"
    return text


@dataclass(frozen=True)
class Estimate:
    """A mean task score with its standard error and what it rests on.

    Attributes:
        mean: Mean score over the tasks.
        standard_error: Standard error of ``mean`` (shared classes included);
            infinite when ``reliable`` is False.
        dof: Degrees of freedom of the Student-t reference distribution
            (``math.inf`` for a normal one).
        tasks: Number of tasks.
        classes: Distinct classes the tasks drew (None if unknown).
        units: Distinct independent units (None if unknown).
        reliable: Whether the data support an interval at all.
        note: Why not, or what else to know; empty when there is nothing to say.
        skewness: Estimated skewness of ``mean``'s sampling distribution, used
            by :meth:`lower_bound` when negative.
    """

    mean: float
    standard_error: float
    dof: float
    tasks: int
    classes: int | None
    units: int | None
    reliable: bool = True
    note: str = ""
    skewness: float = 0.0

    def _quantile(self, probability: float) -> float:
        return float(special.ndtri(probability) if math.isinf(self.dof) else special.stdtrit(self.dof, probability))

    def lower_bound(self, confidence: float) -> float:
        """One-sided lower confidence bound: the true mean is above it with probability ``confidence``.

        A negative ``skewness`` lowers the bound by Johnson's correction
        ``(1 + 2 q^2) * skewness / 6`` standard errors; ``-inf`` when unreliable.
        """
        if not self.reliable:
            return -math.inf
        if self.standard_error == 0.0:
            return self.mean
        q = self._quantile(confidence)
        return self.mean - (q - min(self.skewness, 0.0) * (1 + 2 * q * q) / 6) * self.standard_error

    def half_width(self, confidence: float = 0.95) -> float:
        """Half-width of the symmetric two-sided ``confidence`` interval (``inf`` when unreliable)."""
        if not self.reliable:
            return math.inf
        return self._quantile(0.5 + confidence / 2) * self.standard_error if self.standard_error else 0.0

    @property
    def ci95(self) -> float:
        """Half-width of the two-sided 95% interval."""
        return self.half_width(0.95)

    def support(self) -> str:
        """What the number rests on, e.g. ``600 tasks, 104 classes from 26 independent units``."""
        return support(self.tasks, self.classes, self.units)

    def describe(self, scale: float = 1.0, digits: int = 4) -> str:
        """``mean +/- ci95 (95% CI; N tasks, C classes)``, values multiplied by ``scale``.

        Without a reliable interval: ``mean (no interval: why; N tasks, ...)``;
        when every score is the same: ``mean (no spread: ...)``, not ``+/- 0``.
        """
        if not self.reliable:
            return f"{self.mean * scale:.{digits}f} (no interval: {self.note}; {self.support()})"
        if self.standard_error == 0.0:
            return f"{self.mean * scale:.{digits}f} (no spread: {self.note}; {self.support()})"
        return (f"{self.mean * scale:.{digits}f} +/- {self.ci95 * scale:.{digits}f} "
                f"(95% CI; {self.support()})")

    def as_dict(self) -> dict[str, float | int | str | bool | None]:
        """JSON-ready numbers (infinite ``ci95`` and ``standard_error`` when unreliable)."""
        return {"mean": self.mean, "ci95": self.ci95, "standard_error": self.standard_error, "dof": self.dof,
                "tasks": self.tasks, "classes": self.classes, "units": self.units, "reliable": self.reliable,
                "note": self.note}


_GRID = np.logspace(-5.0, 5.0, 121)  # gamma = s2 / tau2, in units of 1 / median(lambda)
_PRIOR_POWER = 0.5  # p(s2) ~ s2^(power - 1): flat on the unit standard deviation
_ONE_SIDED, _TWO_SIDED = 0.95, 0.95  # the mixture bounds that ``standard_error`` and ``dof`` reproduce
_DOFS = np.logspace(-1.0, 6.0, 1401)
_RATIOS = special.stdtrit(_DOFS, 0.5 + _TWO_SIDED / 2) / special.stdtrit(_DOFS, _ONE_SIDED)


@functools.lru_cache(maxsize=16)
def _membership(units: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray]:
    """``A[t, c]``, the share of task ``t``'s ways that come from unit ``c`` (rows sum to 1), and ``A'A``.

    Both are built by counting (no matrix product): BLAS threads fighting
    other processes for the cores made a 600 x 26 product take tens of ms.
    Cached (read-only): a selection estimates many candidates and pairs on one design.
    """
    index = {u: i for i, u in enumerate(sorted({u for task in units for u in task}))}
    groups = len(index)
    membership, gram = np.zeros(len(units) * groups), np.zeros(groups * groups)
    for ways in {len(task) for task in units}:
        rows = np.array([t for t, task in enumerate(units) if len(task) == ways])
        cols = np.array([[index[u] for u in units[t]] for t in rows])
        membership += np.bincount((rows[:, None] * groups + cols).ravel(), minlength=membership.size) / ways
        pairs = (cols[:, :, None] * groups + cols[:, None, :]).ravel()
        gram += np.bincount(pairs, minlength=gram.size) / ways**2
    membership, gram = membership.reshape(len(units), groups), gram.reshape(groups, groups)
    membership.flags.writeable = gram.flags.writeable = False
    return membership, gram


@functools.lru_cache(maxsize=16)
def _eigen(gram: bytes, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The eigenvalues and vectors of a Gram matrix given by its bytes (cached, read-only), small ones dropped."""
    lam, vectors = np.linalg.eigh(np.frombuffer(gram).reshape(groups, groups))
    keep = lam > 1e-9 * lam[-1]
    lam, vectors = lam[keep], vectors[:, keep]
    lam.flags.writeable = vectors.flags.writeable = False
    return lam, vectors


@dataclass(frozen=True)
class _Spectrum:
    """The scores in the eigenbasis of ``A A'``: components ``z`` of variance ``s2 * lam + tau2``."""

    lam: np.ndarray
    z: np.ndarray  # components of the centred scores
    x: np.ndarray  # components of the all-ones vector (the mean's direction)
    rss: float  # what A cannot explain: tau2 * chi2(n - r)
    n: int

    @classmethod
    def of(cls, values: np.ndarray, membership: np.ndarray, gram: np.ndarray) -> _Spectrum:
        lam, vectors = _eigen(np.ascontiguousarray(gram, dtype=np.float64).tobytes(), gram.shape[0])
        centred = values - values.mean()
        z = (vectors.T @ (membership * centred[:, None]).sum(axis=0)) / np.sqrt(lam)
        x = (vectors.T @ membership.sum(axis=0)) / np.sqrt(lam)
        return cls(lam, z, x, max(float(centred @ centred - z @ z), 0.0), values.size)

    def profile(self, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """REML log-likelihood of each ``gamma`` with ``tau2`` profiled out, and that ``tau2``."""
        shrink = 1.0 / (1.0 + np.outer(gamma, self.lam))
        precision = shrink @ (self.x * self.x)
        residual = shrink @ (self.z * self.z) - (shrink @ (self.x * self.z)) ** 2 / precision + self.rss
        residual = np.maximum(residual, 1e-300)
        loglik = -0.5 * ((self.n - 1) * np.log(residual) - np.log(shrink).sum(axis=1) + np.log(precision))
        return loglik, residual / (self.n - 1)


def _cube_factor(n: int) -> float:
    """``E[sum (e - mean(e))^3] / k3`` for ``n`` independent draws of third cumulant ``k3``."""
    return (n - 1) * (n - 2) / n


def _independent_skewness(values: np.ndarray, standard_error: float) -> float:
    """Skewness of the mean of independent scores: ``k3 / n^2`` over the standard error cubed (0 below 3 scores)."""
    n = values.size
    if n < 3:
        return 0.0
    k3 = float(((values - values.mean()) ** 3).sum()) / _cube_factor(n)
    return k3 / n**2 / standard_error**3


def _third_cumulant(values: np.ndarray, membership: np.ndarray, gram: np.ndarray) -> float:
    """Third cumulant of the mean under the crossed model, by moments of the residuals.

    With ``r = y - mean(y) = Ac u + (e - mean(e))`` (``Ac`` the centred
    membership), ``sum r^3`` and ``sum (A'r)^3`` are linear in the third
    cumulants of ``u`` and ``e``; solving gives both, and the mean's third
    cumulant is ``k3_u * sum(w^3) + k3_e / n^2``.
    """
    n = values.size
    weights = membership.mean(axis=0)
    centred_membership = membership - weights
    residuals = values - values.mean()
    unit_in_tasks = float((centred_membership**3).sum())
    system = np.array([[unit_in_tasks, _cube_factor(n)],
                       [float(((gram - n * np.outer(weights, weights)) ** 3).sum()), unit_in_tasks]])
    moments = np.array([(residuals**3).sum(), ((membership * residuals[:, None]).sum(axis=0) ** 3).sum()])
    try:
        unit_k3, task_k3 = np.linalg.solve(system, moments)
    except np.linalg.LinAlgError:
        return 0.0
    return float(unit_k3 * (weights**3).sum() + task_k3 / n**2)


def _crossed(values: np.ndarray, membership: np.ndarray, gram: np.ndarray) -> tuple[float, float, float]:
    """Standard error, matched dof and skewness of the mean under the crossed model (see the module doc)."""
    n = values.size
    spectrum = _Spectrum.of(values, membership, gram)
    gamma = _GRID / float(np.median(spectrum.lam))
    loglik, tau2 = spectrum.profile(gamma)
    logweight = loglik + _PRIOR_POWER * np.log(gamma)  # the log grid's Jacobian turns s2^(p-1) into s2^p
    weight = np.exp(logweight - logweight.max())
    weight /= weight.sum()
    phi = tau2 * (gamma * float(np.sum(membership.mean(axis=0) ** 2)) + 1.0 / n)
    sd = np.sqrt(phi)
    # The mixture's tails: P(mean - mu > d) = sum_k weight_k * T_{n-1}(-d / sd_k); match a t at two levels.
    reach = -float(special.stdtrit(n - 1, (1 - _TWO_SIDED) / 2)) * float(sd[weight > 1e-12].max())

    def quantile(confidence: float) -> float:
        return optimize.brentq(lambda d: float(weight @ special.stdtr(n - 1, -d / sd)) - (1 - confidence), 0.0,
                               reach, xtol=1e-12 * reach)

    one_sided, two_sided = quantile(_ONE_SIDED), quantile(0.5 + _TWO_SIDED / 2)
    # The t quantiles' ratio falls with the dof; interpolate the dof in a table of it.
    dof = math.inf if two_sided / one_sided <= _RATIOS[-1] else float(
        np.exp(np.interp(-two_sided / one_sided, -_RATIOS, np.log(_DOFS))))
    standard_error = one_sided / (float(special.ndtri(_ONE_SIDED)) if math.isinf(dof) else
                                  float(special.stdtrit(dof, _ONE_SIDED)))
    skewness = _third_cumulant(values, membership, gram) / standard_error**3
    return standard_error, float(dof), skewness


def estimate(scores: Sequence[float] | np.ndarray, design: TaskDesign | None = None) -> Estimate:
    """Mean of per-task scores with a standard error that accounts for shared classes.

    Args:
        scores: One score per task (or one paired difference per task).
        design: The tasks' classes and units, in the same order; None or an
            empty design treats the tasks as independent.

    Returns:
        The estimate; ``reliable`` is False (and the bounds infinite) for a
        single task or when every task drew from the same single unit.

    Raises:
        ValueError: If there are no scores, or the design has another length.
    """
    values = np.asarray(scores, dtype=np.float64)
    n = values.size
    if n == 0:
        raise ValueError("no scores to summarise")
    design = design or TaskDesign.none()
    if design.units is not None and len(design.units) != n:
        raise ValueError(f"{n} scores but a design of {len(design.units)} tasks")
    mean = float(values.mean())
    classes, units = design.distinct_classes(), design.distinct_units()
    if n == 1:
        return Estimate(mean, math.inf, math.nan, 1, classes, units, False, "one task")
    if units is not None and units < 2:
        return Estimate(mean, math.inf, math.nan, n, classes, units, False,
                        "all tasks share one unit, whose effect cannot be told from the mean")
    if np.ptp(values) == 0.0:
        return Estimate(mean, 0.0, n - 1.0, n, classes, units, True, "all scores are equal")
    if design.units is None:
        standard_error = float(values.std(ddof=1)) / math.sqrt(n)
        return Estimate(mean, standard_error, n - 1.0, n, classes, units,
                        skewness=_independent_skewness(values, standard_error))
    with _single_threaded_blas():
        standard_error, dof, skewness = _crossed(values, *_membership(design.units))
    return Estimate(mean, standard_error, dof, n, classes, units, skewness=skewness)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """NumPy's BLAS on one thread: its thread team costs more than these small matrices save.

    Measured: 12-15 ms per call with the default two threads on a busy 2-core
    machine, 3-5 ms with one (200 tasks, 41 units); an estimate runs at every
    look of every early-stopping race.
    """
    return _blas_controller().limit(limits=1, user_api="blas")
