"""Samplers a study can use, created by name so that a resumed study re-creates its own."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from ..errors import UsageError

SAMPLERS = ("tpe", "nsga2", "gp", "random", "brute-force")
DEFAULT_SAMPLER = "tpe"


def _build(name: str, seed: int) -> optuna.samplers.BaseSampler:
    # Multivariate TPE, constant liar, GP and brute force are marked experimental; a sampler is built for every
    # trial (see TrialSeededSampler), and Optuna's warning would be printed each time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _construct(name, seed)


def _construct(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=16, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=16)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "brute-force":
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise UsageError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Re-creates the inner sampler for every trial, seeded by ``seed`` and the trial number.

    A single worker's search is reproducible from the seed, and workers that
    share a study draw different random numbers (they own different trial
    numbers) instead of proposing the same patterns. The built-in samplers keep
    their state in the study, so nothing is lost by re-creating them.
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._factory, self._seed = factory, seed
        self._inner = factory(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Seeds a fresh inner sampler for this trial."""
        self._inner = self._factory(self._seed * 1_000_003 + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """Delegates to the inner sampler."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Delegates to the inner sampler."""
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """Delegates to the inner sampler."""
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Delegates to the inner sampler."""
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Delegates to the inner sampler."""
        self._inner.reseed_rng()


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Builds a seeded sampler.

    ``tpe`` (the default) is multivariate TPE: it models the flags and the step
    count jointly, needs only a few random start-up trials, and with the
    constant-liar heuristic several workers do not propose the same pattern at
    once. ``nsga2`` is the genetic alternative (bit-flip mutation suits the
    flags, but it needs many generations); ``gp`` fits a Gaussian process;
    ``brute-force`` enumerates the space in random order (exhaustive when the
    trial budget covers the whole space); ``random`` is the control.

    Raises:
        UsageError: Unknown sampler name.
    """
    _build(name, seed)  # validates the name
    return TrialSeededSampler(lambda s: _build(name, s), seed)
