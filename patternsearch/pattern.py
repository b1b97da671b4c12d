"""Lambda patterns: which layer groups adapt, and for how many inner steps."""

from __future__ import annotations

import re
from collections.abc import Sequence

_PATTERN_RE = re.compile(r"^([01]+):(\d+)$")
FULL = "full"
NONE = "none"


class PatternError(ValueError):
    """A pattern text that cannot be parsed, or does not fit the model."""


class Pattern:
    """One update flag per layer group plus the number of inner steps.

    The text form is ``FLAGS:STEPS``, for example ``11111:5`` (full MAML for a
    five-group model) or ``00011:5`` (only the last two groups adapt).
    Patterns compare equal by their canonical form: a pattern with zero steps
    or with no flag set performs no adaptation and equals ``none``.

    Args:
        flags: One boolean per layer group, in group order.
        steps: Number of inner SGD steps (non-negative).
    """

    __slots__ = ("_flags", "_steps")

    def __init__(self, flags: Sequence[bool], steps: int) -> None:
        if len(flags) == 0:
            raise PatternError("a pattern needs at least one layer-group flag")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise PatternError(f"inner steps must be a non-negative integer, got {steps!r}")
        self._flags = tuple(bool(f) for f in flags)
        self._steps = steps

    @property
    def flags(self) -> tuple[bool, ...]:
        """One update flag per layer group."""
        return self._flags

    @property
    def steps(self) -> int:
        """Number of inner adaptation steps."""
        return self._steps

    @property
    def num_groups(self) -> int:
        """Number of layer groups the pattern is written for."""
        return len(self._flags)

    @property
    def is_none(self) -> bool:
        """True when the pattern performs no adaptation at all."""
        return self._steps == 0 or not any(self._flags)

    @property
    def first_updated(self) -> int | None:
        """Index of the earliest updated group, or None for ``none``."""
        if self.is_none:
            return None
        return self._flags.index(True)

    def canonical(self) -> Pattern:
        """Returns the canonical form (every "no adaptation" pattern is ``0...0:0``)."""
        if self.is_none:
            return Pattern.none(self.num_groups)
        return self

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
        """Parses ``FLAGS:STEPS`` or the aliases ``full`` and ``none``.

        Args:
            text: Pattern text, or a Pattern (then only validated).
            num_groups: The model's group count. Needed to resolve aliases;
                when given, a pattern of another length is an error.
            full_steps: Step count of ``full`` (the checkpoint's evaluation
                step count). Needed to resolve ``full``.

        Returns:
            The parsed pattern.

        Raises:
            PatternError: On malformed text, unresolvable aliases or a length
                that differs from ``num_groups``.
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
            match = _PATTERN_RE.match(stripped)
            if match is None:
                raise PatternError(
                    f"malformed pattern {stripped!r}: expected FLAGS:STEPS such as 11111:5, 'full' or 'none'"
                )
            pattern = cls(tuple(c == "1" for c in match.group(1)), int(match.group(2)))
        if num_groups is not None and pattern.num_groups != num_groups:
            raise PatternError(
                f"pattern {pattern} has {pattern.num_groups} flags but the model has {num_groups} layer groups"
            )
        return pattern

    def __str__(self) -> str:
        return "".join("1" if f else "0" for f in self._flags) + f":{self._steps}"

    def __repr__(self) -> str:
        return f"Pattern('{self}')"

    def _key(self) -> tuple[tuple[bool, ...], int]:
        canonical = self.canonical()
        return canonical._flags, canonical._steps

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pattern):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())
