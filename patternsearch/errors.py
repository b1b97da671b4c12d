"""Errors that come from user input, reported as one line without a traceback."""

from __future__ import annotations

from .benchmarks import DataError
from .checkpoint import CheckpointError
from .groups import GroupingError
from .pattern import PatternError
from .registry import PluginError


class UsageError(ValueError):
    """A setting or combination of settings that cannot work."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    PatternError,
    PluginError,
    DataError,
    CheckpointError,
    GroupingError,
)


def one_line(error: BaseException) -> str:
    """The error message folded onto one line."""
    return " ".join(str(error).split()) or type(error).__name__
