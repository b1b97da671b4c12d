"""The search space: one update flag per layer group plus the inner-step count."""

from __future__ import annotations

import optuna

from ..pattern import Pattern

STEPS_PARAM = "steps"


def flag_param(index: int) -> str:
    """Name of group ``index``'s flag in the trial parameters."""
    return f"g{index}"


def suggest_pattern(trial: optuna.Trial, num_groups: int, max_steps: int) -> Pattern:
    """Draws a pattern from the sampler: a boolean per group and ``steps`` in [0, max_steps]."""
    flags = tuple(trial.suggest_categorical(flag_param(i), [False, True]) for i in range(num_groups))
    steps = trial.suggest_int(STEPS_PARAM, 0, max_steps)
    return Pattern(flags, steps)


def pattern_params(pattern: Pattern) -> dict[str, object]:
    """Trial parameters that encode ``pattern`` (for enqueueing)."""
    params: dict[str, object] = {flag_param(i): flag for i, flag in enumerate(pattern.flags)}
    params[STEPS_PARAM] = pattern.steps
    return params


def space_size(num_groups: int, max_steps: int) -> int:
    """Number of distinct patterns in canonical form (every "no adaptation" pattern counts once)."""
    return (2**num_groups - 1) * max_steps + 1
