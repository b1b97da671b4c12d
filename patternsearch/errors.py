"""Every error patternsearch raises on purpose: one hierarchy, importing nothing of the domain.

A :class:`PatternsearchError` comes from input a user can fix (a setting, a
file, a pattern); the command line prints it as one line and exits with 2.
Each child also derives from the built-in exception it refines, so code that
caught ``ValueError`` or ``LookupError`` before keeps working.
"""

from __future__ import annotations


class PatternsearchError(Exception):
    """Base class: an error the user can fix, reported as one line without a traceback."""


class UsageError(PatternsearchError, ValueError):
    """A setting or combination of settings that cannot work."""


class PatternError(PatternsearchError, ValueError):
    """A malformed pattern, or one that does not fit the model."""


class GroupingError(PatternsearchError, ValueError):
    """A model's layer groups are inconsistent."""


class PluginError(PatternsearchError, LookupError):
    """An unknown name or a plug-in reference that cannot be loaded."""


class DataError(PatternsearchError, RuntimeError):
    """Data that is missing, fails its checksum, or cannot be read."""


class CheckpointError(PatternsearchError, RuntimeError):
    """A checkpoint that is missing, unreadable, read-only or does not fit the model."""


class StorageError(UsageError):
    """A study storage that cannot be opened or does not hold what was asked for."""


class SelectionError(UsageError):
    """A study without the trials a selection needs."""


class RecordError(PatternsearchError, ValueError):
    """A stored record (a selection, a tuning plan or answer) of another version of patternsearch."""


class AdaptationDiverged(FloatingPointError):
    """Adaptation gave non-finite outputs or scores on some tasks: an outcome a decision reports, not a user error.

    Attributes:
        diverged: Tasks on which it diverged.
        tasks: Tasks scored.
    """

    def __init__(self, message: str, *, diverged: int, tasks: int) -> None:
        super().__init__(message)
        self.diverged, self.tasks = diverged, tasks


def one_line(error: BaseException) -> str:
    """The error message folded onto one line."""
    return " ".join(str(error).split()) or type(error).__name__
