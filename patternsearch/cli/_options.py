"""The option groups commands share (data, experiment, storage, confirmation, seeds) and their value types."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..search import DEFAULT_STORAGE
from ..spec import ExperimentSpec


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _option(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    value: object = raw
    for convert in (int, float):
        try:
            value = convert(raw)
            break
        except ValueError:
            continue
    return key, value


def add_seed(parser: argparse.ArgumentParser, name: str, default: int, what: str) -> None:
    """``--<name>`` (e.g. ``--test-seed``) and, for one release, the old ``--seed`` with a deprecation warning."""
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, type=int, default=default, help=f"{what} (default {default})")
    parser.add_argument("--seed", dest=dest, type=int, action=_DeprecatedSeed, help=argparse.SUPPRESS,
                        new_name=f"--{name}")


class _DeprecatedSeed(argparse.Action):
    """The old ``--seed``: it meant another seed in each command; it still works, and says what to write instead."""

    def __init__(self, *args: Any, new_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new_name = new_name

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"patternsearch: warning: --seed is deprecated (each command seeded something else with it); "
              f"use {self.new_name}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_data_options(parser: argparse.ArgumentParser, *, queries: bool = True) -> None:
    """Benchmark, model, ways/shots/queries, data folder, benchmark options, device."""
    parser.add_argument("--benchmark", default="omniglot-small", help="benchmark name or module:function")
    parser.add_argument("--model", default=None, help="model name, module:function or file.py:function")
    parser.add_argument("--ways", type=positive_int, default=5, help="classes per episode (default 5)")
    parser.add_argument("--shots", type=positive_int, default=1, help="support examples per class (default 1)")
    if queries:
        parser.add_argument("--queries", type=positive_int, default=15, help="query examples per class (default 15)")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--benchmark-option", dest="benchmark_options", action="append", type=_option,
                        default=[], metavar="KEY=VALUE", help="benchmark option, e.g. image_size=32 (repeatable)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def add_experiment_options(parser: argparse.ArgumentParser) -> None:
    """The data options and the checkpoint."""
    add_data_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint path (default: the shipped or cached one for this configuration)")


def spec(args: argparse.Namespace) -> ExperimentSpec:
    """The command's experiment spec, validated once (options a command lacks keep their defaults)."""
    return ExperimentSpec(
        benchmark=args.benchmark, model=args.model, ways=args.ways, shots=args.shots,
        queries=getattr(args, "queries", 15), data_root=args.data_root,
        benchmark_options=dict(getattr(args, "benchmark_options", [])),
        checkpoint=None if getattr(args, "checkpoint", None) is None else str(args.checkpoint), device=args.device,
    )


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """The Optuna storage and the study in it."""
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", default=None, help="study name (default: <benchmark>-<model>-<ways>w<shots>s)")


def add_ledger_option(parser: argparse.ArgumentParser) -> None:
    """The storage whose ledger records a look at the test split (evaluate, bench)."""
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help="with --split test: the Optuna storage whose ledger records the look, so that a later "
                             f"confirmation on that split knows it (default {DEFAULT_STORAGE})")


def add_confirmation_options(parser: argparse.ArgumentParser) -> None:
    """The promise (D, confidence) and the test split's tasks (select, tune)."""
    parser.add_argument("--max-degradation", type=float, default=0.01,
                        help="allowed accuracy loss against full MAML, in accuracy units (default 0.01 = one point)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="probability that the answer is truly within the budget (default 0.95)")
    parser.add_argument("--tasks", type=int, default=600, help="confirmation tasks (default 600)")
    parser.add_argument("--accept-test-looks", action="store_true",
                        help="confirm even though evaluate or bench scored the test split before, or earlier "
                             "confirmations spent its promise (recorded, and said, as not covered by the guarantee)")
    parser.add_argument("--report-tasks", type=int, default=None,
                        help="fresh test tasks for the reported accuracies (default: as many as --tasks)")
    add_seed(parser, "test-seed", 0, "seed of the test tasks and of the split of the test characters")


def add_meta_update_options(parser: argparse.ArgumentParser, default: str) -> None:
    """Tasks per meta-update and the outer learning rate (train, specialize)."""
    parser.add_argument("--meta-batch", type=positive_int, default=None, help=f"tasks per meta-update{default}")
    parser.add_argument("--meta-lr", type=positive_float, default=None, help=f"Adam learning rate{default}")


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """Validation and checkpoint cadence (train, specialize)."""
    parser.add_argument("--val-every", type=positive_int, default=100, help="validate every this many iterations")
    parser.add_argument("--val-tasks", type=positive_int, default=100, help="validation episodes")
    parser.add_argument("--checkpoint-every", type=positive_int, default=25, help="iterations between checkpoints")


def add_json_option(parser: argparse.ArgumentParser, what: str = "one JSON object") -> None:
    """``--json``: print the result for programs."""
    parser.add_argument("--json", action="store_true", help=f"print {what}")
