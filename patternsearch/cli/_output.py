"""How commands print: a typed result's lines or its JSON, warnings on standard error."""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol


class Describable(Protocol):
    """A command's typed result: its lines for people, its JSON-ready form for programs."""

    def describe(self) -> str: ...  # noqa: D102

    def to_dict(self) -> Any: ...  # noqa: D102


def show(result: Describable, as_json: bool) -> int:
    """Prints ``result`` (one JSON value with ``--json``); returns the exit code 0."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=False))
    else:
        print(result.describe())
    return 0


def warn(message: str | None) -> None:
    """Prints ``patternsearch: warning: ...`` on standard error (nothing for None)."""
    if message:
        print(f"patternsearch: warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    """Prints ``patternsearch: note: ...`` on standard error."""
    print(f"patternsearch: note: {message}", file=sys.stderr)
