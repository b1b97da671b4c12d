"""Samplers a study can use, created by name so that a resumed study re-creates its own."""

from __future__ import annotations

import optuna

from ..errors import UsageError

SAMPLERS = ("tpe", "nsga2", "gp", "random", "brute-force")
DEFAULT_SAMPLER = "tpe"


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
