"""``evaluate``, ``bench`` and ``groups``: one pattern scored, patterns timed, a model's layer groups."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..experiment import model_groups, open_experiment
from ..search import bench_patterns, evaluate
from ._command import Command
from ._options import (
    add_data_options,
    add_experiment_options,
    add_json_option,
    add_ledger_option,
    add_seed,
    non_negative_int,
    positive_int,
    spec,
)
from ._output import show, warn


def _evaluate_options(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser)
    parser.add_argument("--pattern", default="full",
                        help="FLAGS:STEPS[@SCALE] phases joined by +, 'full' or 'none' (default full)")
    parser.add_argument("--baseline", default="full",
                        help="pattern timed next to it and compared with it on the same tasks (default full)")
    parser.add_argument("--baseline-checkpoint", type=Path, default=None,
                        help="adapt the baseline on this checkpoint instead (e.g. the parent of a specialized "
                             "--checkpoint); the comparison stays paired on the same tasks")
    parser.add_argument("--split", choices=["val", "test"], default="val",
                        help="val (default: explore here) or test (recorded in --storage's ledger and yours: a "
                             "later confirmation on the test split is refused without --accept-test-looks)")
    parser.add_argument("--tasks", type=positive_int, default=600, help="number of tasks (default 600)")
    add_seed(parser, "task-seed", 0, "seed of the tasks")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds (default 5)")
    add_json_option(parser)
    add_ledger_option(parser)


def _groups_options(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser)
    parser.add_argument("--input-shape", type=_shape, default=None,
                        help="shape of one example, e.g. 1,28,28 (default: the model's own default, else the "
                             "benchmark's)")
    add_json_option(parser, "a JSON list")


def _bench_options(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser)
    parser.add_argument("--patterns", nargs="+", default=[],
                        help="patterns to time (FLAGS:STEPS[@SCALE] phases joined by +, full, none)")
    parser.add_argument("--export", dest="exports", action="append", type=Path, default=[], metavar="FILE",
                        help="a file 'patternsearch export' wrote, timed adapting and predicting beside the "
                             "patterns (repeatable)")
    parser.add_argument("--tasks", type=positive_int, default=5, help="tasks per round (default 5)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    add_seed(parser, "task-seed", 0, "seed of the tasks")
    add_json_option(parser, "a JSON list")
    add_ledger_option(parser)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes such as 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return shape


def _evaluate(args: argparse.Namespace) -> int:
    experiment = open_experiment(spec(args))
    bars: list[Any] = []  # opened at the first scored chunk: a refusal before it is the only line printed

    def advance(tasks: int) -> None:
        if not bars:
            bars.append(tqdm(total=2 * args.tasks, desc=f"scoring {args.pattern} and the baseline", unit="task",
                             dynamic_ncols=True))
        bars[0].update(tasks)

    try:
        result = evaluate(experiment, args.pattern, baseline=args.baseline,
                          baseline_checkpoint=args.baseline_checkpoint, split=args.split, tasks=args.tasks,
                          seed=args.task_seed, repeats=args.repeats, storage=args.storage, advance=advance)
    finally:
        for bar in bars:
            bar.close()
    warn(experiment.specialization_warning(experiment.pattern(args.pattern), args.baseline_checkpoint))
    warn(result.timing.noise)
    return show(result, args.json)


def _bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_patterns(open_experiment(spec(args)), args.patterns, split=args.split, tasks=args.tasks,
                            seed=args.task_seed, repeats=args.repeats, warmup=args.warmup, storage=args.storage,
                            exports=args.exports)
    return show(result, args.json)


def _groups(args: argparse.Namespace) -> int:
    return show(model_groups(spec(args), args.input_shape), args.json)


COMMANDS = (
    Command("evaluate", "score one pattern and time it against full MAML",
            "Adapt with one pattern on fixed tasks and compare it with the baseline (full MAML) on the same tasks: "
            "accuracy with its 95%% interval, the paired difference, adaptation time and adapt + predict time (each "
            "with its speedup), and FLOPs.", _evaluate_options, _evaluate, (
                "patternsearch evaluate --pattern 00010:5 --data-root DATA",
                "patternsearch evaluate --pattern 00010:5 --split val --tasks 100 --json --data-root DATA")),
    Command("groups", "show a model's layer groups",
            "Index, name, parameter count and share of forward FLOPs of each layer group of a model. With --model "
            "(and optionally --input-shape) no data is needed.", _groups_options, _groups,
            ("patternsearch groups --model conv4", "patternsearch groups --model resnet12 --input-shape 3,84,84")),
    Command("bench", "time patterns against full MAML and the plain PyTorch loop",
            "Time each pattern, full MAML and a plain PyTorch MAML loop on the same tasks, interleaved, after "
            "warm-up: adaptation time (median, spread, speedup over full MAML: what the search optimises) and "
            "adapt + predict time (adapting, then predicting the task's query batch).", _bench_options, _bench,
            ("patternsearch bench --patterns 00010:5 00011:1 --data-root DATA",
             "patternsearch bench --patterns 00011:2 --export adapter.pt2 --data-root DATA")),
)
