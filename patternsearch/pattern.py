"""Lambda patterns: which layer groups adapt, for how many inner steps, in which phases, at which step size."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PatternError

_PHASE_RE = re.compile(r"^([01]+):(\d+)(?:@([^@]+))?$")
FULL = "full"
NONE = "none"
PHASE_SEPARATOR = "+"


def _format_scale(scale: float) -> str:
    """Shortest text that reads back as ``scale`` (``2`` not ``2.0``; no ``+``, the phase separator)."""
    text = repr(float(scale)).replace("e+", "e")
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Phase:
    """Consecutive inner steps that update the same groups with the same step size.

    Attributes:
        flags: One update flag per layer group, in group order.
        steps: Number of inner SGD steps (non-negative).
        scale: Multiplier of the checkpoint's inner learning rate (positive).
    """

    flags: tuple[bool, ...]
    steps: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.flags) == 0:
            raise PatternError("a pattern needs at least one layer-group flag")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise PatternError(f"inner steps must be a non-negative integer, got {self.steps!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                or not math.isfinite(self.scale) or self.scale <= 0:
            raise PatternError(f"the inner learning-rate scale must be a positive number, got {self.scale!r}")
        object.__setattr__(self, "flags", tuple(bool(f) for f in self.flags))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def is_noop(self) -> bool:
        """True when the phase changes nothing (no step, or no flagged group)."""
        return self.steps == 0 or not any(self.flags)

    def with_steps(self, steps: int) -> Phase:
        """The same phase with another step count."""
        return Phase(self.flags, steps, self.scale)

    def __str__(self) -> str:
        text = "".join("1" if f else "0" for f in self.flags) + f":{self.steps}"
        return text if self.scale == 1.0 else f"{text}@{_format_scale(self.scale)}"


def _parse_phase(part: str, text: str) -> Phase:
    match = _PHASE_RE.match(part.strip())
    if match is None:
        where = f"pattern {text!r}" if part.strip() == text else f"phase {part.strip()!r} in pattern {text!r}"
        raise PatternError(f"malformed {where}: expected FLAGS:STEPS or FLAGS:STEPS@SCALE such as 11111:5, "
                           "00011:4@2 or 11111:1+00011:4, 'full' or 'none'")
    try:
        scale = 1.0 if match.group(3) is None else float(match.group(3))
    except ValueError:
        raise PatternError(f"malformed scale {match.group(3)!r} in phase {part.strip()!r}: expected a positive "
                           "number such as 2 or 0.5") from None
    try:
        return Phase(tuple(c == "1" for c in match.group(1)), int(match.group(2)), scale)
    except PatternError as error:
        raise PatternError(f"phase {part.strip()!r} of pattern {text!r}: {error}") from None


class Pattern:
    """Phases of inner steps, each with one update flag per layer group and a learning-rate scale.

    The text form is ``FLAGS:STEPS`` for one phase at the checkpoint's inner
    learning rate, for example ``11111:5`` (full MAML for a five-group model)
    or ``00011:5`` (only the last two groups adapt). Phases run in order and
    are joined by ``+``; ``@SCALE`` multiplies a phase's learning rate:
    ``11111:1+00011:4`` is one full step, then four steps of the last two
    groups; ``00010:2@2`` takes two steps at twice the rate.

    Patterns compare equal by their canonical form (:meth:`canonical`): phases
    that change nothing are dropped, adjacent phases with the same flags and
    scale merge, and a pattern that changes nothing equals ``none``.

    Args:
        flags: One boolean per layer group, in group order (single-phase form).
        steps: Number of inner SGD steps (non-negative).
        scale: Learning-rate multiplier of the phase.
    """

    __slots__ = ("_phases",)

    def __init__(self, flags: Sequence[bool], steps: int, scale: float = 1.0) -> None:
        self._phases: tuple[Phase, ...] = (Phase(tuple(flags), steps, scale),)

    @classmethod
    def of_phases(cls, phases: Sequence[Phase]) -> Pattern:
        """A pattern running ``phases`` in order.

        Raises:
            PatternError: If there is no phase or the phases' group counts differ.
        """
        if not phases:
            raise PatternError("a pattern needs at least one phase")
        counts = {len(phase.flags) for phase in phases}
        if len(counts) > 1:
            raise PatternError(f"phases {' + '.join(map(str, phases))} have different numbers of group flags")
        pattern = cls.__new__(cls)
        pattern._phases = tuple(phases)
        return pattern

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The phases, in the order they run (as written, see :meth:`canonical`)."""
        return self._phases

    @property
    def flags(self) -> tuple[bool, ...]:
        """Per group: whether it adapts in some phase (for one phase, its flags)."""
        return tuple(any(flags) for flags in zip(*(p.flags for p in self._phases if not p.is_noop),
                                                 strict=True)) or (False,) * self.num_groups

    @property
    def steps(self) -> int:
        """Number of inner steps, over all phases."""
        return sum(phase.steps for phase in self._phases)

    @property
    def num_groups(self) -> int:
        """Number of layer groups the pattern is written for."""
        return len(self._phases[0].flags)

    @property
    def is_none(self) -> bool:
        """True when the pattern performs no adaptation at all."""
        return all(phase.is_noop for phase in self._phases)

    @property
    def is_single_phase(self) -> bool:
        """True for the paper's patterns: one set of flags at the checkpoint's learning rate."""
        phases = self.canonical()._phases
        return len(phases) == 1 and phases[0].scale == 1.0

    @property
    def first_updated(self) -> int | None:
        """Index of the earliest group updated in any phase, or None for ``none``."""
        return None if self.is_none else self.flags.index(True)

    def canonical(self) -> Pattern:
        """The canonical form: no-op phases dropped, adjacent equal phases merged, ``none`` as ``0...0:0``."""
        merged: list[Phase] = []
        for phase in self._phases:
            if phase.is_noop:
                continue
            if merged and (merged[-1].flags, merged[-1].scale) == (phase.flags, phase.scale):
                merged[-1] = merged[-1].with_steps(merged[-1].steps + phase.steps)
            else:
                merged.append(phase)
        if not merged:
            return Pattern.none(self.num_groups)
        if tuple(merged) == self._phases:
            return self
        return Pattern.of_phases(merged)

    def truncated(self, steps: int) -> Pattern:
        """The pattern's first ``steps`` inner steps, in canonical form (an SGD trajectory's prefix)."""
        kept: list[Phase] = []
        left = steps
        for phase in self.canonical()._phases:
            if left <= 0:
                break
            kept.append(phase.with_steps(min(phase.steps, left)))
            left -= phase.steps
        return Pattern.of_phases(kept).canonical() if kept else Pattern.none(self.num_groups)

    def remaining(self, steps: int) -> tuple[Phase, ...]:
        """The canonical phases left after the first ``steps`` inner steps."""
        left: list[Phase] = []
        skip = steps
        for phase in self.canonical()._phases:
            if skip >= phase.steps:
                skip -= phase.steps
                continue
            left.append(phase.with_steps(phase.steps - skip))
            skip = 0
        return tuple(left)

    @classmethod
    def full(cls, num_groups: int, steps: int) -> Pattern:
        """Every group adapts for ``steps`` steps (full MAML)."""
        return cls((True,) * num_groups, steps)

    @classmethod
    def none(cls, num_groups: int) -> Pattern:
        """No adaptation."""
        return cls((False,) * num_groups, 0)

    @classmethod
    def parse(
        cls,
        text: str | Pattern,
        *,
        num_groups: int | None = None,
        full_steps: int | None = None,
    ) -> Pattern:
        """Parses ``FLAGS:STEPS[@SCALE]`` phases joined by ``+``, or the aliases ``full`` and ``none``.

        Args:
            text: Pattern text, or a Pattern (then only validated).
            num_groups: The model's group count. Needed to resolve aliases;
                when given, a pattern of another length is an error.
            full_steps: Step count of ``full`` (the checkpoint's evaluation
                step count). Needed to resolve ``full``.

        Returns:
            The parsed pattern (phases as written).

        Raises:
            PatternError: Naming the malformed part, an unresolvable alias or
                a length that differs from ``num_groups``.
        """
        if isinstance(text, Pattern):
            pattern = text
        else:
            stripped = str(text).strip()
            lowered = stripped.lower()
            if lowered in (FULL, NONE):
                if num_groups is None:
                    raise PatternError(f"pattern alias {lowered!r} needs a model to know the group count")
                if lowered == NONE:
                    return cls.none(num_groups)
                if full_steps is None:
                    raise PatternError("pattern alias 'full' needs the checkpoint's evaluation step count")
                return cls.full(num_groups, full_steps)
            if not stripped:
                raise PatternError("empty pattern: expected FLAGS:STEPS such as 11111:5, 'full' or 'none'")
            pattern = cls.of_phases([_parse_phase(part, stripped) for part in stripped.split(PHASE_SEPARATOR)])
        if num_groups is not None and pattern.num_groups != num_groups:
            raise PatternError(
                f"pattern {pattern} has {pattern.num_groups} flags but the model has {num_groups} layer groups"
            )
        return pattern

    def __str__(self) -> str:
        return PHASE_SEPARATOR.join(map(str, self._phases))

    def __repr__(self) -> str:
        return f"Pattern('{self}')"

    def _key(self) -> tuple[Phase, ...]:
        return self.canonical()._phases

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pattern):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())
