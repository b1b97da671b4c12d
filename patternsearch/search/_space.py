"""The search spaces: update flags per layer group, inner steps, and optionally phases and learning-rate scales.

``flags`` is the paper's space: one flag per group plus the step count.
``phases`` lets the flags change during adaptation: up to ``max_phases``
phases run in order, each with its own flags and steps, together at most
``max_steps`` steps. With ``search_lr`` every phase also draws a multiplier of
the checkpoint's inner learning rate from :data:`LR_SCALES`.

Trial parameters: phase 1 uses ``g0``, ``g1``, ... (one flag per group),
``steps`` and ``lr``; phase ``k`` > 1 uses ``p{k}_g0``, ..., ``p{k}_steps`` and
``p{k}_lr``. The space has the same parameters in every trial, so
multivariate TPE models them jointly (a conditional or shrinking range would
leave the later phases to be sampled one parameter at a time, and a first
study of that design drew a second phase in only 10 of 200 trials): a later
phase is absent when its ``steps`` is 0, and phases beyond ``max_steps`` steps
in total are cut (:meth:`~patternsearch.Pattern.truncated`).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from ..errors import UsageError
from ..pattern import Pattern, Phase

SPACES = ("flags", "phases")
DEFAULT_MAX_PHASES = 2
LR_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _param(phase: int, name: str) -> str:
    return name if phase == 0 else f"p{phase + 1}_{name}"


def flag_param(index: int, phase: int = 0) -> str:
    """Name of group ``index``'s flag of phase ``phase`` (from 0) in the trial parameters."""
    return _param(phase, f"g{index}")


def steps_param(phase: int = 0) -> str:
    """Name of phase ``phase``'s (from 0) step count in the trial parameters."""
    return _param(phase, "steps")


def lr_param(phase: int = 0) -> str:
    """Name of phase ``phase``'s (from 0) learning-rate scale in the trial parameters."""
    return _param(phase, "lr")


@dataclass(frozen=True)
class SearchSpace:
    """The patterns a study draws from.

    Attributes:
        num_groups: Layer groups of the model.
        max_steps: Largest total number of inner steps.
        kind: ``flags`` (one phase) or ``phases``.
        max_phases: Largest number of phases (1 for ``flags``).
        search_lr: Draw a learning-rate scale per phase from :data:`LR_SCALES`
            (otherwise every phase uses the checkpoint's rate).
    """

    num_groups: int
    max_steps: int
    kind: str = "flags"
    max_phases: int = 1
    search_lr: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SPACES:
            raise UsageError(f"unknown search space {self.kind!r}; choose from {', '.join(SPACES)}")
        if self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.kind == "flags" and self.max_phases != 1:
            raise UsageError("--max-phases needs --space phases (the flags space has one phase)")
        if self.kind == "phases" and not 1 <= self.max_phases <= self.max_steps:
            raise UsageError(f"--max-phases must lie in [1, --max-steps = {self.max_steps}], got {self.max_phases}")

    def suggest(self, trial: optuna.Trial) -> Pattern:
        """Draws a pattern from the trial's sampler (in canonical form)."""
        if self.kind == "flags":
            return Pattern.of_phases([self._phase(trial, 0, 0, self.max_steps)]).canonical()
        later = [self._phase(trial, k, 0, self.max_steps - 1) for k in range(1, self.max_phases)]
        return Pattern.of_phases([self._phase(trial, 0, 1, self.max_steps), *later]).truncated(self.max_steps)

    def _phase(self, trial: optuna.Trial, k: int, low: int, high: int) -> Phase:
        flags = tuple(trial.suggest_categorical(flag_param(i, k), [False, True]) for i in range(self.num_groups))
        steps = trial.suggest_int(steps_param(k), low, high)
        scale = trial.suggest_categorical(lr_param(k), LR_SCALES) if self.search_lr else 1.0
        return Phase(flags, steps, scale)

    def params(self, pattern: Pattern) -> dict[str, object]:
        """Trial parameters that encode ``pattern`` (for enqueueing it; absent phases take 0 steps).

        Raises:
            UsageError: If the space cannot draw ``pattern``.
        """
        phases = list(pattern.canonical().phases)
        if pattern.steps > self.max_steps or len(phases) > self.max_phases \
                or (not self.search_lr and any(p.scale != 1.0 for p in phases)) \
                or any(p.scale not in LR_SCALES for p in phases):
            raise UsageError(f"pattern {pattern} lies outside the {self.describe()} space")
        phases += [Phase((False,) * self.num_groups, 0)] * (self.max_phases - len(phases))
        values: dict[str, object] = {}
        for k, phase in enumerate(phases):
            values.update({flag_param(i, k): flag for i, flag in enumerate(phase.flags)})
            values[steps_param(k)] = phase.steps
            if self.search_lr:
                values[lr_param(k)] = phase.scale
        return values

    def labels(self, groups: list[str]) -> dict[str, str]:
        """Readable names of the trial parameters, for importance tables."""
        labels = {}
        for k in range(self.max_phases):
            suffix = "" if self.max_phases == 1 else f" (phase {k + 1})"
            labels.update({flag_param(i, k): name + suffix for i, name in enumerate(groups)})
            labels[steps_param(k)] = "steps" + suffix
            labels[lr_param(k)] = "lr scale" + suffix
        return labels

    def describe(self) -> str:
        """One line, e.g. ``phases (<= 2 phases, <= 10 steps, lr scales 0.25-8)``."""
        parts = [f"<= {self.max_phases} phases"] if self.kind == "phases" else []
        parts.append(f"<= {self.max_steps} steps")
        if self.search_lr:
            parts.append(f"lr scales {LR_SCALES[0]:g}-{LR_SCALES[-1]:g}")
        return f"{self.kind} ({', '.join(parts)})"
