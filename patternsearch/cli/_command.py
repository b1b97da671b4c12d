"""A command declared once: its name, its help, its options, what it runs and the examples its ``--help`` ends with."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One ``patternsearch`` sub-command.

    Attributes:
        name: What follows ``patternsearch``.
        summary: Its line in ``patternsearch --help``.
        description: The paragraph its own ``--help`` starts with.
        add_options: Declares its options on its parser.
        run: Parses nothing more: calls one public function with the parsed
            options and prints its result; returns the exit code.
        examples: Command lines its ``--help`` ends with (``DATA``: the data folder).
    """

    name: str
    summary: str
    description: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    examples: tuple[str, ...] = ()
