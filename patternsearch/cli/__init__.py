"""The ``patternsearch`` command line: each command parses, calls one public Python function, prints its result.

Rooms: ``_main`` (the parser, ``main``, interrupts), ``_command`` (a command
declared once), ``_options`` (the shared option groups), ``_output``
(printing), and one module per command family, each listing its ``COMMANDS``:
``_training`` (train, specialize, import-checkpoint), ``_measuring``
(evaluate, bench, groups), ``_searching`` (optimize, studies, report),
``_selecting`` (select, tune).
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
