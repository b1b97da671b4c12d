"""The ``patternsearch`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import USER_ERRORS, one_line

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _add_data_options(parser: argparse.ArgumentParser, *, queries: bool = True) -> None:
    parser.add_argument("--benchmark", default="omniglot-small", help="benchmark name or module:function")
    parser.add_argument("--model", default=None, help="model name, module:function or file.py:function")
    parser.add_argument("--ways", type=_positive_int, default=5, help="classes per episode (default 5)")
    parser.add_argument("--shots", type=_positive_int, default=1, help="support examples per class (default 1)")
    if queries:
        parser.add_argument("--queries", type=_positive_int, default=15, help="query examples per class (default 15)")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


# --------------------------------------------------------------------------- train


def _train_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="meta-train a model with MAML", description="Meta-train a model with MAML.")
    _add_data_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint path (resumed if it exists)")
    parser.add_argument("--iterations", type=_positive_int, default=None, help="meta-updates in total")
    parser.add_argument("--meta-batch", type=_positive_int, default=None, help="tasks per meta-update")
    parser.add_argument("--meta-lr", type=_positive_float, default=None, help="Adam learning rate")
    parser.add_argument("--inner-lr", type=_positive_float, default=None, help="inner-loop learning rate")
    parser.add_argument("--train-steps", type=_positive_int, default=None, help="inner steps in training")
    parser.add_argument("--eval-steps", type=_positive_int, default=None, help="inner steps at evaluation ('full')")
    parser.add_argument("--first-order", action="store_true", help="first-order MAML (default: second order)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=_positive_int, default=100)
    parser.add_argument("--val-tasks", type=_positive_int, default=100)
    parser.add_argument("--checkpoint-every", type=_positive_int, default=25, help="iterations between checkpoints")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from .benchmarks import create_benchmark
    from .checkpoint import default_checkpoint_path
    from .training import TrainConfig, train

    config = TrainConfig(
        benchmark=args.benchmark, model=args.model, ways=args.ways, shots=args.shots, queries=args.queries,
        inner_lr=args.inner_lr, train_steps=args.train_steps, eval_steps=args.eval_steps,
        meta_batch=args.meta_batch, meta_lr=args.meta_lr, iterations=args.iterations,
        first_order=args.first_order, seed=args.seed, val_every=args.val_every, val_tasks=args.val_tasks,
        checkpoint_every=args.checkpoint_every, data_root=args.data_root, device=args.device,
    )
    benchmark = create_benchmark(args.benchmark, args.ways, args.shots, args.queries, args.data_root)
    path = args.checkpoint or default_checkpoint_path(
        benchmark.name, args.model or benchmark.default_model, args.ways, args.shots
    )
    checkpoint = train(config, path, benchmark=benchmark)
    last = checkpoint.history[-1] if checkpoint.history else {}
    print(f"checkpoint: {path} (iteration {checkpoint.training.get('iteration')}, "
          f"validation score {last.get('val_score', float('nan')):.4f})")
    return 0


# --------------------------------------------------------------------------- evaluate


def _add_experiment_options(parser: argparse.ArgumentParser) -> None:
    _add_data_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint path (default: the shipped or cached one for this configuration)")


def _open(args: argparse.Namespace, **options: Any) -> Any:
    from .experiment import open_experiment

    return open_experiment(
        args.benchmark, args.model, ways=args.ways, shots=args.shots, queries=args.queries,
        data_root=args.data_root, checkpoint=args.checkpoint, device=args.device, **options,
    )


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate", help="score one pattern and time its adaptation",
        description="Adapt with one pattern on fixed tasks; report accuracy (95%% CI), latency and FLOPs.",
    )
    _add_experiment_options(parser)
    parser.add_argument("--pattern", default="full", help="FLAGS:STEPS, 'full' or 'none' (default full)")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--tasks", type=_positive_int, default=600, help="number of tasks (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="task seed (default 0)")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_pattern

    experiment = _open(args)
    pattern = experiment.pattern(args.pattern)
    tasks = experiment.tasks(args.split, args.tasks, args.seed)
    result = evaluate_pattern(
        experiment.model, experiment.benchmark, pattern, experiment.inner_lr, tasks,
        split=args.split, device=experiment.device, repeats=args.repeats,
    )
    if args.json:
        _print_json(result.as_dict())
    else:
        print(f"pattern {result.pattern} on {result.tasks} {result.split} tasks ({result.device})")
        print(f"  {result.metric}: {result.accuracy:.4f} +/- {result.ci95:.4f} (95% CI)")
        print(f"  adaptation latency: {result.latency_ms:.2f} ms median (IQR {result.latency_iqr_ms:.2f} ms)")
        print(f"  adaptation FLOPs: {result.flops:,}")
    return 0


# --------------------------------------------------------------------------- main

_PARSERS = [_train_parser, _evaluate_parser]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="patternsearch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"patternsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except USER_ERRORS as error:
        print(f"patternsearch: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patternsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
