"""Uncertainty of a mean over few-shot tasks that share classes.

Tasks drawn from one split share its classes: in ``omniglot-small`` every test
task draws 5 of Latin's 104 classes, which come from 26 characters. A class
that a pattern handles badly lowers every task it appears in, so task scores
are correlated and the usual ``sd / sqrt(n)`` understates the uncertainty.

:func:`estimate` uses a crossed random-effects model: the score of task ``t``
is ``mu + mean(u_c for c in units(t)) + e_t``, with independent unit effects
``u_c`` (variance ``sigma2``) and task noise ``e_t``. Two tasks then have
covariance ``sigma2 * R[t, t']``, where ``R`` is the overlap of their units
(shared ways divided by both tasks' way counts). Because
``E[(d_t - d_t')**2 / 2] = tau2 - sigma2 * R[t, t']`` holds for every pair,
a regression of the pairs' half squared differences on their overlap
estimates ``tau2`` (a task's variance) and ``sigma2`` without involving the
mean; the variance of the mean follows, and a Welch-Satterthwaite degree of
freedom (``n - 1`` tasks, ``G - 1`` units) turns it into Student-t bounds.
The unit is what the benchmark says is independent (:attr:`Task.units`),
the class by default. ``tests/test_uncertainty.py`` simulates the model and
checks that the bounds cover at their stated rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .benchmarks import Task


@dataclass(frozen=True)
class TaskDesign:
    """Which classes and independent units each task drew (None for tasks without classes)."""

    classes: tuple[tuple[int, ...], ...] | None
    units: tuple[tuple[int, ...], ...] | None

    @classmethod
    def of(cls, tasks: Sequence[Task]) -> TaskDesign:
        """The design of ``tasks``; tasks without classes give an empty design."""
        if not tasks or any(t.classes is None or t.units is None for t in tasks):
            return cls(None, None)
        return cls(tuple(t.classes for t in tasks), tuple(t.units for t in tasks))  # type: ignore[misc]

    @classmethod
    def none(cls) -> TaskDesign:
        """Independent tasks (no shared classes known)."""
        return cls(None, None)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TaskDesign:
        """The design of the tasks at ``indices``."""
        if self.classes is None or self.units is None:
            return self
        return TaskDesign(tuple(self.classes[i] for i in indices), tuple(self.units[i] for i in indices))

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
        standard_error: Standard error of ``mean`` (shared classes included).
        dof: Degrees of freedom of the Student-t reference distribution.
        tasks: Number of tasks.
        classes: Distinct classes the tasks drew (None if unknown).
        units: Distinct independent units (None if unknown).
    """

    mean: float
    standard_error: float
    dof: float
    tasks: int
    classes: int | None
    units: int | None

    def _quantile(self, probability: float) -> float:
        return float(stats.t.ppf(probability, max(self.dof, 1.0)))

    def lower_bound(self, confidence: float) -> float:
        """One-sided lower confidence bound: the true mean is above it with probability ``confidence``."""
        return self.mean - self._quantile(confidence) * self.standard_error

    def half_width(self, confidence: float = 0.95) -> float:
        """Half-width of the two-sided ``confidence`` interval."""
        return self._quantile(0.5 + confidence / 2) * self.standard_error

    @property
    def ci95(self) -> float:
        """Half-width of the two-sided 95% interval."""
        return self.half_width(0.95)

    def support(self) -> str:
        """What the number rests on, e.g. ``600 tasks, 104 classes from 26 independent units``."""
        return support(self.tasks, self.classes, self.units)

    def describe(self, scale: float = 1.0, digits: int = 4) -> str:
        """``mean +/- ci95 (95% CI; N tasks, C classes)``, values multiplied by ``scale``."""
        return (f"{self.mean * scale:.{digits}f} +/- {self.ci95 * scale:.{digits}f} "
                f"(95% CI; {self.support()})")

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready numbers."""
        return {"mean": self.mean, "ci95": self.ci95, "standard_error": self.standard_error, "dof": self.dof,
                "tasks": self.tasks, "classes": self.classes, "units": self.units}


def _membership(units: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """``A[t, c]``: the share of task ``t``'s ways that come from unit ``c`` (rows sum to 1)."""
    index = {u: i for i, u in enumerate(sorted({u for task in units for u in task}))}
    membership = np.zeros((len(units), len(index)))
    for t, task in enumerate(units):
        for u in task:
            membership[t, index[u]] += 1.0 / len(task)
    return membership


def _crossed_variance(scores: np.ndarray, membership: np.ndarray) -> tuple[float, float] | None:
    """Variance of the mean and its Satterthwaite degrees of freedom, or None if the design is too thin.

    Least squares fits one mean per unit (``scores ~ membership @ beta``;
    the rows sum to 1, so the overall mean is in the fit). The mean score is
    ``w @ beta_hat`` with ``w = membership.mean(0)``, so its variance is
    ``sigma2 * |w|^2 + noise / n``. With ``S`` the sample variance of
    ``beta_hat`` (``G - 1`` dof) and ``k = tr(C P C) / (G - 1)`` its share of
    noise (``P = (A'A)^-1``, ``C`` centring), ``E[S] = sigma2 + k * noise``,
    so the variance is estimated by ``|w|^2 S + (1/n - k |w|^2) noise``:
    a linear combination of two mean squares, whose degrees of freedom
    follow Satterthwaite.
    """
    n, units = membership.shape
    beta, _, rank, _ = np.linalg.lstsq(membership, scores, rcond=None)
    noise_dof = n - rank
    if rank < units or noise_dof < 2:
        return None
    residuals = scores - membership @ beta
    noise = float(residuals @ residuals) / noise_dof
    between = float(beta.var(ddof=1))
    centring = np.eye(units) - 1.0 / units
    share = float(np.trace(centring @ np.linalg.inv(membership.T @ membership) @ centring)) / (units - 1)
    weights = membership.mean(axis=0)
    between_coefficient = float(weights @ weights)
    noise_coefficient = 1.0 / n - share * between_coefficient
    variance = between_coefficient * between + noise_coefficient * noise
    if variance <= noise / n:  # no evidence of unit effects: the tasks' own noise only
        return noise / n, float(noise_dof)
    dof = variance**2 / ((between_coefficient * between) ** 2 / (units - 1)
                         + (noise_coefficient * noise) ** 2 / noise_dof)
    return variance, dof


def estimate(scores: Sequence[float] | np.ndarray, design: TaskDesign | None = None) -> Estimate:
    """Mean of per-task scores with a standard error that accounts for shared classes.

    Args:
        scores: One score per task (or one paired difference per task).
        design: The tasks' classes and units, in the same order; None or an
            empty design treats the tasks as independent.

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
        return Estimate(mean, 0.0, 1.0, 1, classes, units)
    crossed = None
    if design.units is not None and units is not None and units >= 2:
        crossed = _crossed_variance(values, _membership(design.units))
    # Without units, or with about as many units as tasks (sharing is rare), the tasks count as independent.
    variance, dof = crossed or (float(values.var(ddof=1)) / n, n - 1.0)
    return Estimate(mean, math.sqrt(max(variance, 0.0)), dof, n, classes, units)
