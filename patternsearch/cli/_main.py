"""The ``patternsearch`` parser and ``main``: one-line errors, exit codes, and what Ctrl-C leaves saved."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from .. import __version__
from ..errors import PatternsearchError, one_line
from ..looks import Ledger, Look
from ..search import open_storage, safe_url
from . import _deploying, _measuring, _searching, _selecting, _training

Handler = Callable[[argparse.Namespace], int]

# Every command, in the order --help lists them.
_COMMANDS = (*_training.COMMANDS, *_measuring.COMMANDS, *_searching.COMMANDS, *_selecting.COMMANDS,
             *_deploying.COMMANDS)


class _Parser(argparse.ArgumentParser):
    """Reports usage errors on one line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps the example lines of an epilog as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command, each ``--help`` ending with examples."""
    parser = _Parser(
        prog="patternsearch", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find the fastest Lambda pattern for MAML few-shot adaptation: which layer groups to update,\n"
                    "for how many inner steps, so that accuracy stays within a budget of full MAML.",
        epilog="typical use:\n"
               "  patternsearch optimize --trials 200 --data-root DATA     search patterns (resumable)\n"
               "  patternsearch select --max-degradation 0.01 --data-root DATA\n"
               "                                                          the fastest confirmed pattern\n"
               "  patternsearch report --out report/                      plot and tables of the study\n"
               "'patternsearch COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"patternsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        data = any("DATA" in line for line in command.examples)
        epilog = ("examples (DATA: the folder holding the benchmark's archives; leave --data-root out to download "
                  "them):" if data else "examples:") + "".join(f"\n  {line}" for line in command.examples)
        command_parser = sub.add_parser(command.name, help=command.summary, description=command.description,
                                        epilog=epilog, formatter_class=_HelpFormatter)
        command.add_options(command_parser)
        command_parser.set_defaults(handler=command.run)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    # Optuna would log the interrupted trial with a traceback; the one line main() prints says what matters.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    raise KeyboardInterrupt


def _redeliver_swallowed_interrupt(unraisable: Any) -> None:
    """A ``sys.unraisablehook``: Ctrl-C that landed in a finalizer (which cannot raise) is delivered again.

    Python would print ``Exception ignored in ...`` with a traceback and carry
    on as if nothing was pressed; the signal is sent again a moment later, when
    the main flow, not a finalizer, is running. Other unraisable errors are
    reported as Python reports them.
    """
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        again.daemon = True  # a command that ends first is not kept waiting
        again.start()
        return
    sys.__unraisablehook__(unraisable)


def _saved(args: argparse.Namespace) -> str:
    """What a command that stopped before its end leaves saved, and what running it again does."""
    again = "run the same command again to"
    if args.command == "optimize":
        return f"the finished trials are saved in {safe_url(args.storage)}; {again} continue the study"
    if args.command in ("train", "specialize"):
        where = args.out if args.command == "specialize" else getattr(args, "written", None) or args.checkpoint
        if where is not None and not Path(where).is_file():
            return f"nothing was saved; {again} start over"
        return f"the meta-training so far is saved in {where or 'the default checkpoint'}; {again} resume it"
    if args.command == "tune":
        return (f"the specialization so far is saved in {args.out or 'tuned/<study>'} and the tuning study in "
                f"{safe_url(args.storage)}; {again} continue")
    if args.command == "select":
        look = _recorded_look(args)
        if look is not None:
            return (f"its look at the test split of {look.benchmark} was recorded in {safe_url(args.storage)} before "
                    "its decision was made (it counts toward the error rate of later looks); the answer is stored only "
                    f"when select ends; {again} start over")
        return f"nothing was saved (select stores its answer when it ends); {again} start over"
    return f"nothing was saved; {again} start over"


def _recorded_look(args: argparse.Namespace) -> Look | None:
    """The look at a test split this command recorded (None: none, or the storage cannot say)."""
    try:
        looks = Ledger(open_storage(args.storage, create=False), user=False).every_look()
    except Exception:  # the storage failed or is missing: nothing can be claimed
        return None
    return next((look for look in reversed(looks) if look.command.split()[0] == args.command
                 and look.when >= args.started and look.host == platform.node()), None)


def _interrupted(args: argparse.Namespace) -> str:
    """The one line printed after Ctrl-C: what is saved and how to continue."""
    saved = _saved(args)
    if args.command == "optimize":
        saved = saved.replace("; ", " (the interrupted one is marked failed); ", 1)
    return f"interrupted: {saved}"


_STORAGE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


def _storage_error(error: BaseException) -> BaseException | None:
    """The storage error ``error`` is, or was raised while handling; None when there is none.

    Optuna can mask a failed write with an ``UnboundLocalError`` of its own, raised in a ``finally``.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _STORAGE_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _storage_failure(args: argparse.Namespace, error: Exception) -> str:
    """One line for a storage that failed while the command ran (a database restarted, a lock held too long)."""
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ else error
    detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    reason = detail[0] if detail else type(cause).__name__
    url = getattr(args, "storage", None)
    if url is None:
        return f"the study storage failed ({' '.join(reason.split())})"
    try:
        password = make_url(url).password
    except (sqlalchemy.exc.ArgumentError, ValueError):
        password = None
    if password:
        reason = reason.replace(str(password), "***")
    return f"the study storage {safe_url(url)} failed ({' '.join(reason.split())})"


def _system_failure(error: OSError) -> str:
    """One line for a file system that failed (a disk full, a folder gone), naming the file."""
    what = error.strerror or one_line(error)
    return f"{what}: {error.filename}" if error.filename else what


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code.

    0 done; 2 bad input; 1 a failure that is not the input's (an unabsorbed divergence, a storage or file system
    that failed while the command ran); 130 interrupted. Each error is one line, saying what is saved.
    """
    args = build_parser().parse_args(argv)
    args.started = time.time()
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _redeliver_swallowed_interrupt
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except PatternsearchError as error:
        print(f"patternsearch: error: {one_line(error)}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # e.g. the baseline itself diverging; candidates' divergences are answers
        print(f"patternsearch: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not turn the line into a traceback
        print(f"patternsearch: {_interrupted(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # every file is written whole or not at all: what was saved before is intact
        print(f"patternsearch: error: {_system_failure(error)}; {_saved(args)}", file=sys.stderr)
        return 1
    except Exception as error:
        failed = _storage_error(error)
        if failed is None:
            raise
        print(f"patternsearch: error: {_storage_failure(args, failed)}; {_saved(args)}", file=sys.stderr)
        return 1
