"""The ``patternsearch`` command line: a thin layer over the Python API (every command has a Python equivalent)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import optuna

from ._version import __version__
from .errors import PatternsearchError, UsageError, one_line

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


def _add_seed(parser: argparse.ArgumentParser, name: str, default: int, what: str) -> None:
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


def _add_data_options(parser: argparse.ArgumentParser, *, queries: bool = True) -> None:
    parser.add_argument("--benchmark", default="omniglot-small", help="benchmark name or module:function")
    parser.add_argument("--model", default=None, help="model name, module:function or file.py:function")
    parser.add_argument("--ways", type=_positive_int, default=5, help="classes per episode (default 5)")
    parser.add_argument("--shots", type=_positive_int, default=1, help="support examples per class (default 1)")
    if queries:
        parser.add_argument("--queries", type=_positive_int, default=15, help="query examples per class (default 15)")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--benchmark-option", dest="benchmark_options", action="append", type=_option,
                        default=[], metavar="KEY=VALUE", help="benchmark option, e.g. image_size=32 (repeatable)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


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


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


# --------------------------------------------------------------------------- train


def _train_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="meta-train a model with MAML", description="Meta-train a model with MAML.")
    _add_data_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint path (resumed if it exists)")
    parser.add_argument("--iterations", type=_positive_int, default=None, help="meta-updates in total")
    _add_meta_update_options(parser, "")
    parser.add_argument("--inner-lr", type=_positive_float, default=None, help="inner-loop learning rate")
    parser.add_argument("--train-steps", type=_positive_int, default=None, help="inner steps in training")
    parser.add_argument("--eval-steps", type=_positive_int, default=None, help="inner steps at evaluation ('full')")
    parser.add_argument("--first-order", action="store_true", help="first-order MAML (default: second order)")
    parser.add_argument("--pattern", default=None,
                        help="inner-loop pattern, e.g. 00011:5 (default: full MAML at --train-steps); the outer "
                             "loop still updates every parameter")
    _add_seed(parser, "train-seed", 0, "seed of the initial weights and the training episodes")
    _add_progress_options(parser)
    parser.set_defaults(handler=_train)


def _add_meta_update_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--meta-batch", type=_positive_int, default=None, help=f"tasks per meta-update{default}")
    parser.add_argument("--meta-lr", type=_positive_float, default=None, help=f"Adam learning rate{default}")


def _add_progress_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-every", type=_positive_int, default=100, help="validate every this many iterations")
    parser.add_argument("--val-tasks", type=_positive_int, default=100, help="validation episodes")
    parser.add_argument("--checkpoint-every", type=_positive_int, default=25, help="iterations between checkpoints")


def _specialize_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "specialize", help="continue meta-training a checkpoint with a pattern as its inner loop",
        description="Continue meta-training an existing checkpoint with pattern P as the inner loop (the outer "
                    "loop updates every parameter), so that P loses less against full MAML. The new checkpoint "
                    "records P and its parent's checksum; rerunning resumes.",
    )
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to specialize (default: the shipped or cached one of --benchmark, "
                             "--model, --ways, --shots)")
    parser.add_argument("--benchmark", default="omniglot-small", help="benchmark of the default checkpoint")
    parser.add_argument("--model", default=None, help="model of the default checkpoint")
    parser.add_argument("--ways", type=_positive_int, default=5)
    parser.add_argument("--shots", type=_positive_int, default=1)
    parser.add_argument("--pattern", required=True, help="inner-loop pattern, e.g. the one select chose")
    parser.add_argument("--iterations", type=_positive_int, required=True, help="meta-updates in total")
    parser.add_argument("--out", type=Path, required=True, help="specialized checkpoint (resumed if it exists)")
    _add_meta_update_options(parser, " (default: the source's)")
    parser.add_argument("--first-order", action="store_true", default=None,
                        help="first-order MAML (default: as the source was trained)")
    _add_seed(parser, "train-seed", 1, "seed of the training episodes")
    _add_progress_options(parser)
    parser.set_defaults(handler=_specialize)


def _specialize(args: argparse.Namespace) -> int:
    from .experiment import build_benchmark, checkpoint_path
    from .training import specialize

    source = args.checkpoint
    if source is None:
        spec = _spec(args)
        source = checkpoint_path(spec, build_benchmark(spec))
    checkpoint = specialize(  # the parent's own benchmark settings come from its checkpoint
        source, args.pattern, args.iterations, args.out, meta_batch=args.meta_batch, meta_lr=args.meta_lr,
        first_order=args.first_order, seed=args.train_seed, val_every=args.val_every, val_tasks=args.val_tasks,
        checkpoint_every=args.checkpoint_every, data_root=args.data_root, device=args.device,
    )
    last = checkpoint.history[-1] if checkpoint.history else {}
    print(f"specialized checkpoint: {args.out} (pattern {checkpoint.pattern}, parent {source}, iteration "
          f"{checkpoint.training.get('iteration')}, validation score with the pattern "
          f"{last.get('val_score', float('nan')):.4f})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .experiment import build_benchmark, checkpoint_path
    from .training import TrainConfig, train

    spec = _spec(args)
    config = TrainConfig.for_spec(
        spec, inner_lr=args.inner_lr, train_steps=args.train_steps, eval_steps=args.eval_steps,
        meta_batch=args.meta_batch, meta_lr=args.meta_lr, iterations=args.iterations,
        first_order=args.first_order, seed=args.train_seed, val_every=args.val_every, val_tasks=args.val_tasks,
        checkpoint_every=args.checkpoint_every, pattern=args.pattern,
    )
    benchmark = build_benchmark(spec)
    path = checkpoint_path(spec, benchmark)
    checkpoint = train(config, path, benchmark=benchmark)
    last = checkpoint.history[-1] if checkpoint.history else {}
    print(f"checkpoint: {path} (iteration {checkpoint.training.get('iteration')}, "
          f"validation score {last.get('val_score', float('nan')):.4f})")
    return 0


# --------------------------------------------------------------------------- import-checkpoint


def _import_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "import-checkpoint", help="turn a state dict meta-trained elsewhere into a patternsearch checkpoint",
        description="Read SRC (a state dict, possibly under 'state_dict'/'model_state_dict'/'model', keys possibly "
                    "prefixed by a wrapper such as 'module.' or 'model.') with weights_only=True, match it to "
                    "--model, write DST atomically and score full MAML on a few validation tasks.",
    )
    parser.add_argument("source", type=Path, metavar="SRC", help="file saved with torch.save(model.state_dict())")
    parser.add_argument("--out", type=Path, required=True, metavar="DST", help="checkpoint to write")
    _add_data_options(parser)
    parser.add_argument("--inner-lr", type=_positive_float, required=True, help="the model's inner learning rate")
    parser.add_argument("--eval-steps", type=_positive_int, required=True,
                        help="inner steps of its evaluation protocol (the 'full' pattern)")
    parser.add_argument("--train-steps", type=_positive_int, default=None, help="inner steps it was trained with")
    parser.add_argument("--mode", choices=["train", "eval"], default="train",
                        help="module mode to adapt in: train (batch statistics, MAML's default) or eval")
    parser.add_argument("--strip-prefix", default=None, help="remove this prefix from every key that has it")
    parser.add_argument("--check-tasks", type=_positive_int, default=50,
                        help="validation tasks for the sanity check (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_import)


def _import(args: argparse.Namespace) -> int:
    from .importing import import_checkpoint

    result = import_checkpoint(
        args.source, args.out, _spec(args), inner_lr=args.inner_lr, eval_steps=args.eval_steps,
        train_steps=args.train_steps, mode=args.mode, strip_prefix=args.strip_prefix, check_tasks=args.check_tasks,
    )
    if result.warning:
        print(f"patternsearch: warning: {result.warning}", file=sys.stderr)
    if args.json:
        _print_json({"checkpoint": str(result.path), "full": result.full.as_dict(), "chance": result.chance,
                     "warning": result.warning, "mode": result.checkpoint.mode})
        return 0
    print(f"wrote {result.path} ({result.checkpoint.model} on {result.checkpoint.benchmark}, "
          f"{result.checkpoint.ways}-way {result.checkpoint.shots}-shot, inner lr {result.checkpoint.inner_lr:g}, "
          f"{result.checkpoint.eval_steps} evaluation steps, mode {result.checkpoint.mode})")
    print(f"  full MAML on validation tasks: {result.full.describe()}")
    return 0


# --------------------------------------------------------------------------- evaluate


def _add_experiment_options(parser: argparse.ArgumentParser) -> None:
    _add_data_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint path (default: the shipped or cached one for this configuration)")


def _spec(args: argparse.Namespace) -> Any:
    """The command's experiment spec, validated once (options a command lacks keep their defaults)."""
    from .spec import ExperimentSpec

    return ExperimentSpec(
        benchmark=args.benchmark, model=args.model, ways=args.ways, shots=args.shots,
        queries=getattr(args, "queries", 15), data_root=args.data_root,
        benchmark_options=dict(getattr(args, "benchmark_options", [])),
        checkpoint=None if getattr(args, "checkpoint", None) is None else str(args.checkpoint), device=args.device,
    )


def _open(args: argparse.Namespace) -> Any:
    from .experiment import open_experiment

    return open_experiment(_spec(args))


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate", help="score one pattern and time it against full MAML",
        description="Adapt with one pattern on fixed tasks and compare it with the baseline (full MAML) on the same "
                    "tasks: accuracy with its 95%% interval, the paired difference, adaptation time and adapt + "
                    "predict time (each with its speedup), and FLOPs.",
    )
    _add_experiment_options(parser)
    parser.add_argument("--pattern", default="full",
                        help="FLAGS:STEPS[@SCALE] phases joined by +, 'full' or 'none' (default full)")
    parser.add_argument("--baseline", default="full",
                        help="pattern timed next to it and compared with it on the same tasks (default full)")
    parser.add_argument("--baseline-checkpoint", type=Path, default=None,
                        help="adapt the baseline on this checkpoint instead (e.g. the parent of a specialized "
                             "--checkpoint); the comparison stays paired on the same tasks")
    parser.add_argument("--split", choices=["val", "test"], default="val",
                        help="val (default: explore here) or test (recorded in --storage: a later confirmation "
                             "on the test split is refused without --accept-test-looks)")
    parser.add_argument("--tasks", type=_positive_int, default=600, help="number of tasks (default 600)")
    _add_seed(parser, "task-seed", 0, "seed of the tasks")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    _add_ledger_option(parser)
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .search import evaluate

    experiment = _open(args)
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
    _warn_if_specialized_for_another(experiment, experiment.pattern(args.pattern), args.baseline_checkpoint)
    if result.timing.noise:
        print(f"patternsearch: warning: {result.timing.noise}", file=sys.stderr)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.describe())
    return 0


def _warn_if_specialized_for_another(experiment: Any, pattern: Any, baseline_checkpoint: Path | None) -> None:
    """Warns when a specialized checkpoint adapts another pattern than its own, or is its own baseline."""
    special = experiment.checkpoint
    if special.pattern is None or not special.parent:
        return
    parent = f"{special.parent.get('path', '?')} (sha256 {str(special.parent.get('sha256', ''))[:12]}...)"
    if str(pattern.canonical()) != special.pattern:
        print(f"patternsearch: warning: {experiment.checkpoint_path} was specialized for {special.pattern}, not "
              f"{pattern.canonical()}: with another pattern it is not the network it was trained to be; its parent "
              f"{parent} is the baseline to compare with (--baseline-checkpoint)", file=sys.stderr)
    elif baseline_checkpoint is None or Path(baseline_checkpoint).resolve() == experiment.checkpoint_path.resolve():
        print(f"patternsearch: warning: the baseline adapts the specialized checkpoint itself; compare with its "
              f"parent {parent} (--baseline-checkpoint)", file=sys.stderr)


# --------------------------------------------------------------------------- groups


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes such as 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return shape


def _groups_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "groups", help="show a model's layer groups",
        description="Index, name, parameter count and share of forward FLOPs of each layer group of a model. "
                    "With --model (and optionally --input-shape) no data is needed.",
    )
    _add_data_options(parser)
    parser.add_argument("--input-shape", type=_shape, default=None,
                        help="shape of one example, e.g. 1,28,28 (default: the model's own default, else the "
                             "benchmark's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=_groups)


def _groups(args: argparse.Namespace) -> int:
    import torch

    from .groups import group_summaries
    from .models import create_model

    shape = args.input_shape or (None if args.model is None else _default_input_shape(args.model))
    if shape is not None:  # the groups come from the model alone: no data needed
        outputs, model_name = args.ways, args.model or "conv4"
    else:
        from .benchmarks import create_benchmark

        benchmark = create_benchmark(args.benchmark, args.ways, args.shots, args.queries, args.data_root,
                                     **dict(args.benchmark_options))
        shape, outputs = benchmark.input_shape, benchmark.num_outputs
        model_name = args.model or benchmark.default_model
    model = create_model(model_name, outputs, input_shape=shape)
    rows = group_summaries(model, torch.zeros(2, *shape))
    if args.json:
        _print_json([{"index": r.index, "name": r.name, "parameters": r.parameters, "flops_share": r.flops_share}
                     for r in rows])
        return 0
    print(f"{model_name}: {len(rows)} layer groups (a pattern has one flag per group, in this order); "
          f"input {','.join(map(str, shape))}")
    print(_table(["index", "group", "parameters", "FLOPs share"],
                 [(r.index, r.name, f"{r.parameters:,}", f"{100 * r.flops_share:.1f}%") for r in rows]))
    return 0


def _default_input_shape(model: str) -> tuple[int, ...] | None:
    """The input shape a model's factory defaults to (None when it has no default)."""
    import inspect

    from .models import MODELS

    try:
        parameter = inspect.signature(MODELS.get(model)).parameters.get("input_shape")
    except (TypeError, ValueError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return tuple(int(size) for size in parameter.default)


# --------------------------------------------------------------------------- bench


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="time patterns against full MAML and the plain PyTorch loop",
        description="Time each pattern, full MAML and a plain PyTorch MAML loop on the same tasks, interleaved, "
                    "after warm-up: adaptation time (median, spread, speedup over full MAML: what the search "
                    "optimises) and adapt + predict time (adapting, then predicting the task's query batch).",
    )
    _add_experiment_options(parser)
    parser.add_argument("--patterns", nargs="+", required=True,
                        help="patterns to time (FLAGS:STEPS[@SCALE] phases joined by +, full, none)")
    parser.add_argument("--tasks", type=_positive_int, default=5, help="tasks per round (default 5)")
    parser.add_argument("--repeats", type=_positive_int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=_non_negative_int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    _add_seed(parser, "task-seed", 0, "seed of the tasks")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    _add_ledger_option(parser)
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .measurement import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    ledger = _test_ledger(args)
    experiment = _open(args)
    patterns = [experiment.pattern(text) for text in args.patterns]
    tasks = experiment.tasks(args.split, args.tasks, args.task_seed)
    rows = bench(experiment, patterns, tasks, repeats=args.repeats, warmup=args.warmup)
    if ledger is not None:  # it prints accuracies
        from .checkpoint import file_checksum

        ledger.record_scoring("bench", experiment.benchmark.name, [file_checksum(experiment.checkpoint_path)],
                              patterns, tasks, args.task_seed)
    if args.json:
        _print_json([row.as_dict() for row in rows])
        return 0
    print(f"{rows[0].device}, {rows[0].threads} threads; {args.tasks} tasks x {args.repeats} rounds, interleaved; "
          f"adapt + predict predicts {rows[0].query_batch} queries")
    print(_table(
        ["variant", "pattern", "adapt ms", "IQR ms", "speedup", "vs full@same steps", "adapt+predict ms",
         "adapt+predict speedup", "FLOPs", f"accuracy ({args.tasks} tasks)"],
        [(r.name, r.pattern, f"{r.latency_ms:.3f}", f"{r.latency_iqr_ms:.3f}", f"{r.speedup:.2f}x",
          "-" if r.speedup_same_steps is None else f"{r.speedup_same_steps:.2f}x", f"{r.adapt_predict_ms:.3f}",
          f"{r.adapt_predict_speedup:.2f}x", f"{r.flops:.3g}", f"{r.accuracy:.4f}") for r in rows],
    ))
    return 0


# --------------------------------------------------------------------------- search


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _add_ledger_option(parser: argparse.ArgumentParser) -> None:
    from .search import DEFAULT_STORAGE

    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help="with --split test: the Optuna storage whose ledger records the look, so that a later "
                             f"confirmation on that split knows it (default {DEFAULT_STORAGE})")


def _test_ledger(args: argparse.Namespace) -> Any:
    """The storage's ledger of looks when the command scores the test split (opened before any work), else None."""
    from .looks import Ledger
    from .search import open_storage

    return Ledger(open_storage(args.storage)) if args.split == "test" else None


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    from .search import DEFAULT_STORAGE

    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--study", default=None, help="study name (default: <benchmark>-<model>-<ways>w<shots>s)")


def _optimize_parser(sub: argparse._SubParsersAction) -> None:
    from .search import DEFAULT_MAX_PHASES, LR_SCALES, SAMPLERS, SPACES

    parser = sub.add_parser(
        "optimize", help="search Lambda patterns (multi-objective, resumable)",
        description="Search the patterns of a meta-trained model for the best latency/accuracy trade-offs. "
                    "--trials is the study's total target: rerunning resumes, a larger value extends.",
    )
    _add_experiment_options(parser)
    _add_storage_options(parser)
    parser.add_argument("--trials", type=int, default=200, help="target number of evaluated trials (default 200)")
    parser.add_argument("--tasks", type=int, default=200, help="fixed validation tasks per trial (default 200)")
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the validation tasks (default 0)")
    parser.add_argument("--max-steps", type=int, default=10,
                        help="largest inner-step count searched, all phases together (default 10)")
    parser.add_argument("--space", choices=SPACES, default="flags",
                        help="flags: one set of update flags for every step (default); phases: flags that change "
                             "between phases, e.g. 11111:1+00011:4")
    parser.add_argument("--max-phases", type=_positive_int, default=None,
                        help=f"largest number of phases with --space phases (default {DEFAULT_MAX_PHASES})")
    parser.add_argument("--search-lr", action="store_true",
                        help="also search a scale of the inner learning rate per phase "
                             f"({', '.join(f'{s:g}' for s in LR_SCALES)})")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search algorithm (default tpe)")
    _add_seed(parser, "sampler-seed", 0, "seed of the sampler")
    parser.add_argument("--baseline", default="full", help="baseline pattern (default full)")
    parser.add_argument("--time-metric", choices=["ratio", "latency", "flops"], default="ratio",
                        help="time objective: latency relative to the baseline (default), ms, or FLOPs")
    parser.add_argument("--latency-tasks", type=int, default=2, help="tasks timed per trial (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per task (default 3)")
    parser.add_argument("--train-iterations", type=_positive_int, default=None,
                        help="meta-training iterations if no checkpoint exists yet")
    parser.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                        help="score every pattern on every task, even once a faster trial is surely more accurate")
    parser.add_argument("--heartbeat-interval", type=_positive_int, default=10,
                        help="seconds between heartbeats; a dead worker's trial is retried after 3 intervals")
    parser.set_defaults(handler=_optimize)


def _optimize(args: argparse.Namespace) -> int:
    from .search import measured, optimize, pareto_trials

    study = optimize(
        args.trials, _spec(args), storage=args.storage, study_name=args.study, tasks=args.tasks,
        task_seed=args.task_seed, max_steps=args.max_steps, space=args.space, max_phases=args.max_phases,
        search_lr=args.search_lr, sampler=args.sampler, seed=args.sampler_seed, baseline=args.baseline,
        time_metric=args.time_metric, latency_tasks=args.latency_tasks, repeats=args.repeats,
        train_iterations=args.train_iterations, early_stopping=args.early_stopping,
        heartbeat_interval=args.heartbeat_interval,
    )
    records = [measured(t) for t in pareto_trials(study)]
    rows = [(r.pattern, f"{r.accuracy:.4f} +/- {r.ci95:.4f}", f"{r.latency_ms:.2f}", f"{r.speedup:.1f}x",
             f"{r.flops:.3g}") for r in records]
    print(f"Pareto front of study {study.study_name!r} ({len(rows)} patterns):")
    print(_table(["pattern", "accuracy (95% CI)", "latency ms", "speedup", "FLOPs"], rows))
    return 0


def _add_confirmation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-degradation", type=float, default=0.01,
                        help="allowed accuracy loss against full MAML, in accuracy units (default 0.01 = one point)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="probability that the answer is truly within the budget (default 0.95)")
    parser.add_argument("--tasks", type=int, default=600, help="confirmation tasks (default 600)")
    parser.add_argument("--accept-test-looks", action="store_true",
                        help="confirm even though evaluate or bench scored the test split before (recorded, and "
                             "said, as not covered by the guarantee)")
    parser.add_argument("--report-tasks", type=int, default=None,
                        help="fresh test tasks for the reported accuracies (default: as many as --tasks)")


def _select_parser(sub: argparse._SubParsersAction) -> None:
    from .confirmation import DEFAULT_CANDIDATES
    from .search import REPORT_TIMED_ROUNDS, REPORT_TIMED_TASKS

    parser = sub.add_parser(
        "select", help="pick the fastest pattern confirmed within an accuracy budget on test tasks",
        description="Validation proposes candidates (the study's patterns faster than the baseline, their "
                    "validation differences corrected for the winner's curse and judged on their least favourable "
                    "validation alphabet); each is compared with the baseline on the same test tasks at its own "
                    "share of the error rate, a confirmed one passing its share on (a fallback procedure: one "
                    "failure does not end the testing). The fastest confirmed pattern is selected, with "
                    "probability >= --confidence "
                    "of being truly within D; its accuracy and speedup are then measured on fresh test tasks that "
                    "took no part in the decision.",
    )
    _add_storage_options(parser)
    _add_confirmation_options(parser)
    parser.add_argument("--candidates", type=_positive_int, default=None,
                        help=f"most candidates tested on the test split (default {DEFAULT_CANDIDATES})")
    _add_seed(parser, "test-seed", 0, "seed of the test tasks and of the split of the test characters")
    parser.add_argument("--no-confirm", action="store_true", help="skip the test split (validation only)")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint the study was made with (with --pattern: the one the pattern adapts; "
                             "default: the shipped one)")
    parser.add_argument("--baseline-checkpoint", type=Path, default=None,
                        help="adapt the baseline on this checkpoint on the test tasks, e.g. the parent of a "
                             "specialized --checkpoint")
    parser.add_argument("--pattern", default=None,
                        help="confirm this pattern alone against --baseline, without a study (e.g. after "
                             "'patternsearch specialize')")
    parser.add_argument("--baseline", default="full", help="baseline with --pattern (default full)")
    parser.add_argument("--timed-tasks", type=_positive_int, default=REPORT_TIMED_TASKS,
                        help=f"report tasks the reported speedup is timed on (default {REPORT_TIMED_TASKS})")
    parser.add_argument("--timed-rounds", type=_positive_int, default=REPORT_TIMED_ROUNDS,
                        help=f"interleaved timing rounds on each of them (default {REPORT_TIMED_ROUNDS})")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_select)


def _select(args: argparse.Namespace) -> int:
    from .confirmation import DEFAULT_CANDIDATES
    from .search import confirm_pattern, select

    timing = {"timed_tasks": args.timed_tasks, "timed_rounds": args.timed_rounds}
    if args.pattern is not None:
        ignored = [flag for flag, given in (("--no-confirm", args.no_confirm), ("--study", args.study is not None),
                                            ("--candidates", args.candidates is not None)) if given]
        if ignored:
            raise UsageError(f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply with "
                             "--pattern, which confirms that one pattern on the test split without a study")
        experiment = _checkpoint_experiment(args.checkpoint, args.data_root, args.device)
        _warn_if_specialized_for_another(experiment, experiment.pattern(args.pattern), args.baseline_checkpoint)
        result = confirm_pattern(
            experiment, args.pattern, args.max_degradation,
            baseline=args.baseline, baseline_checkpoint=args.baseline_checkpoint, confidence=args.confidence,
            test_tasks=args.tasks, report_tasks=args.report_tasks, test_seed=args.test_seed, storage=args.storage,
            accept_test_looks=args.accept_test_looks, **timing,
        )
    else:
        result = select(
            args.max_degradation, storage=args.storage, study_name=args.study, confirm=not args.no_confirm,
            confidence=args.confidence, max_candidates=args.candidates or DEFAULT_CANDIDATES, test_tasks=args.tasks,
            report_tasks=args.report_tasks, test_seed=args.test_seed, data_root=args.data_root,
            checkpoint=args.checkpoint, baseline_checkpoint=args.baseline_checkpoint, device=args.device,
            accept_test_looks=args.accept_test_looks, **timing,
        )
    if args.json:
        _print_json(result.as_dict())
        return 0
    _print_selection(result)
    return 0


def _print_selection(result: Any) -> None:
    """``select``'s answer first (pattern, speedup, accuracy), then what it rests on."""
    from .uncertainty import support

    if result.confirmation_tasks is None:
        verdict = "validation only: not confirmed on test tasks"
    else:
        verdict = "confirmed" if result.confirmed else "not confirmed: the baseline is the answer"
    print(f"selected {result.pattern} ({verdict})")
    if result.speedup is not None:
        print(f"  speedup: {result.speedup:.1f}x (adaptation {result.latency_ms:.2f} ms vs "
              f"{result.baseline_latency_ms:.2f} ms for {result.baseline}, paired, measured now on held-out tasks; "
              f"{result.device}; what the search optimises)")
        print(f"  adapt + predict {result.query_batch} queries: {result.adapt_predict_ms:.2f} ms vs "
              f"{result.baseline_adapt_predict_ms:.2f} ms, {result.adapt_predict_speedup:.1f}x end to end")
    if result.timing_noise:
        print(f"patternsearch: warning: {result.timing_noise}", file=sys.stderr)
    if result.test_accuracy is not None:
        rests_on = support(result.test_tasks or 0, result.test_classes, result.test_units)
        fresh = "classes disjoint from the confirmation's" if result.classes_disjoint else \
            "the confirmation's classes, other episodes"
        print(f"  accuracy on fresh test tasks ({rests_on}; {fresh}): {result.test_accuracy:.4f} +/- "
              f"{result.test_ci95:.4f} vs {result.baseline_test_accuracy:.4f} +/- {result.baseline_test_ci95:.4f}; "
              f"difference {result.difference:+.4f} +/- {result.difference_ci95:.4f} (95% CI)")
    if result.speedup is None and result.val_speedup is not None:
        print(f"  estimated speedup (validation, not confirmed): {result.val_speedup:.1f}x; validation accuracy "
              f"{result.val_accuracy:.4f} vs {result.baseline_val_accuracy:.4f}")
    print(f"  why: {result.reason}")
    if result.look_number is not None:
        print(f"  test split: {result.look_note}")
        for look in result.earlier_looks[-3:]:
            print(f"    looked at before: {look}")
        if len(result.earlier_looks) > 3:
            print(f"    ... {len(result.earlier_looks) - 3} earlier looks not shown")
    if result.baseline_checkpoint and result.baseline_checkpoint != result.checkpoint:
        print(f"  checkpoints: {result.checkpoint} vs the baseline's {result.baseline_checkpoint}")
    if result.candidates:
        print(f"  candidates, fastest first, each tested on {result.confirmation_tasks} confirmation tasks "
              f"({result.confirmation_classes or '-'} classes) at its own level (this look's error rate "
              f"{result.look_level if result.look_level is not None else 1 - result.confidence:.3g}); speedups here "
              "are validation estimates:")
        for c in result.candidates:
            corrected = "" if c.get("val_corrected") is None else f" (corrected {c['val_corrected']:+.4f})"
            validation = "" if c["val_difference"] is None else (
                f"validation {c['val_difference']:+.4f}{corrected}, estimated {c['val_speedup']:.1f}x; ")
            tested = "not tested" if c["lower_bound"] is None else (
                f"test {c['test_difference']:+.4f}, lower bound {c['lower_bound']:+.4f} at level {c['level']:.3g}: "
                + ("confirmed" if c["confirmed"] else "not confirmed"))
            if c.get("diverged"):
                tested = f"diverged on {c['diverged']} of {result.confirmation_tasks} confirmation tasks: not confirmed"
            where = "" if c.get("checkpoint") in (None, result.baseline_checkpoint) else f" on {c['checkpoint']}"
            print(f"    {c['pattern']}{where}: {validation}{tested}")


def _tune_parser(sub: argparse._SubParsersAction) -> None:
    from .search import SPACES

    parser = sub.add_parser(
        "tune", help="search, specialize and confirm: the fastest trusted adaptation of a checkpoint",
        description="From a checkpoint to its fastest adaptation confirmed within --max-degradation of full MAML on "
                    "it: reuse (or run) the pattern study, propose the fastest patterns validation finds close "
                    "enough, specialize them by successive halving within --budget, and confirm the specialized "
                    "checkpoints together with the parent's own candidates on test tasks. Rerunning continues "
                    "where it stopped; several workers on one server --storage (and one --out folder) share the "
                    "work.",
    )
    _add_experiment_options(parser)
    _add_storage_options(parser)
    _add_confirmation_options(parser)
    parser.add_argument("--budget", default="2h",
                        help="specialization time, all candidates together: 90s, 3m, 2h (default 2h)")
    parser.add_argument("--candidates", type=_positive_int, default=4, help="most patterns specialized (default 4)")
    parser.add_argument("--margin", type=float, default=None,
                        help="validation loss beyond D that specialization may close (default 0.015)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the specialized checkpoints (default tuned/<study>)")
    parser.add_argument("--trials", type=_positive_int, default=200,
                        help="trials of the pattern study when it is made here (default 200)")
    parser.add_argument("--space", choices=SPACES, default="flags", help="space of a study made here")
    parser.add_argument("--search-lr", action="store_true", help="search per-phase lr scales in a study made here")
    parser.add_argument("--val-tasks", type=_positive_int, default=200,
                        help="validation tasks ranking the candidates between rungs (default 200)")
    parser.add_argument("--confirm-candidates", type=_positive_int, default=4,
                        help="most (pattern, checkpoint) pairs tested on the test split (default 4)")
    _add_seed(parser, "test-seed", 0, "seed of the test tasks and of the split of the test characters")
    parser.add_argument("--heartbeat-interval", type=_positive_int, default=10,
                        help="seconds between heartbeats; a dead worker's unit is retried after 3 intervals")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    from .tuning import DEFAULT_MARGIN, parse_duration, tune

    result = tune(
        args.max_degradation, _spec(args), budget_s=parse_duration(args.budget), storage=args.storage,
        study_name=args.study, trials=args.trials, search_options={"space": args.space, "search_lr": args.search_lr},
        candidates=args.candidates, margin=DEFAULT_MARGIN if args.margin is None else args.margin,
        val_tasks=args.val_tasks, confidence=args.confidence, max_confirmed=args.confirm_candidates,
        test_tasks=args.tasks, report_tasks=args.report_tasks, test_seed=args.test_seed, out=args.out,
        heartbeat_interval=args.heartbeat_interval, accept_test_looks=args.accept_test_looks,
    )
    if args.json:
        _print_json(result.as_dict())
        return 0
    _print_selection(result.selection)
    print("fronts before and after specialization (validation difference to full MAML on the parent; the test "
          "split's lower bound):")
    print(_table(["pattern", "checkpoint", "speedup", "before", "after", "meta-updates", "confirmation"],
                 [(r.pattern, "parent" if r.after is None else Path(r.checkpoint).name, f"{r.speedup:.1f}x",
                   "-" if r.before is None else f"{r.before:+.4f}", "-" if r.after is None else f"{r.after:+.4f}",
                   r.meta_updates, _tested(r.lower_bound, r.confirmed)) for r in result.fronts()]))
    return 0


def _tested(lower_bound: float | None, confirmed: bool) -> str:
    if lower_bound is None:
        return "not tested"
    return f"{lower_bound:+.4f} {'confirmed' if confirmed else 'not confirmed'}"


def _checkpoint_experiment(path: Path | None, data_root: str | None, device: str) -> Any:
    """The experiment of a checkpoint's own benchmark, ways and shots (default: the shipped checkpoint)."""
    from .checkpoint import load_checkpoint, shipped_checkpoint
    from .experiment import open_experiment

    path = path or shipped_checkpoint("omniglot-small", "conv4", 5, 1)
    return open_experiment(load_checkpoint(path).spec(path, data_root=data_root, device=device))  # type: ignore[arg-type]


def _studies_parser(sub: argparse._SubParsersAction) -> None:
    from .search import DEFAULT_STORAGE

    parser = sub.add_parser("studies", help="list the studies in a storage")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=_studies)


def _studies(args: argparse.Namespace) -> int:
    from .search import list_studies

    summaries = list_studies(args.storage)
    if args.json:
        _print_json([s.as_dict() for s in summaries])
        return 0

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [(s.name, s.benchmark or "-", f"{s.complete + s.stopped_early}/{s.target or '-'}", str(s.stopped_early),
             fmt(s.baseline_accuracy, ".4f"),
             fmt(s.best_speedup_within_1pt, ".1f") + ("x" if s.best_speedup_within_1pt else "")) for s in summaries]
    print(_table(["study", "benchmark", "evaluated/target", "stopped early", "baseline acc", "best speedup (1 pt)"],
                 rows))
    return 0


# --------------------------------------------------------------------------- report


def _report_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report", help="write the answer, Pareto plot, tables and importances of a study",
        description="Write report.html (self-contained), pareto.png and report.json for a study. The headline is "
                    "the pattern select confirmed (run select first); the plot and tables show the study's "
                    "validation accuracies and estimated speedups. Reads the study, never writes it.",
    )
    _add_storage_options(parser)
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default ./report)")
    parser.add_argument("--max-degradation", type=float, default=None,
                        help="accuracy budget of the plot's threshold (default: the one select ran with, else 0.01)")
    parser.add_argument("--data-root", default=None,
                        help="data folder, to score full MAML at the step counts the study did not try")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint the study was made with")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from .confirmation import check_promise
    from .report import build_report
    from .search import resolve_study
    from .tuning import load_result

    if args.max_degradation is not None:
        check_promise(args.max_degradation)
    study = resolve_study(args.storage, args.study)
    files, data = build_report(study, args.out, max_degradation=args.max_degradation, data_root=args.data_root,
                               checkpoint=args.checkpoint, device=args.device,
                               tuned=load_result(args.storage, study.study_name))
    for note in data["notes"]:
        print(f"patternsearch: note: {note}", file=sys.stderr)
    print(f"study {data['study']}: {data['complete']} complete + {data['stopped_early']} stopped early, target "
          f"{data['target']}")
    print(data["headline"]["text"])

    def fmt(value: float | None, spec: str = ".4f") -> str:
        return "-" if value is None else format(value, spec)

    print("Pareto front (validation accuracy, estimated speedup from the study's timing):")
    print(_table(["pattern", "accuracy (validation)", "adaptation ms", "estimated speedup"],
                 [(r["pattern"], fmt(r["val_accuracy"]), fmt(r["latency_ms"], ".2f"), fmt(r["val_speedup"], ".1f")
                   + "x") for r in data["pareto"]]))
    print("best pattern per step count (validation):")
    print(_table(["steps", "best pattern", "accuracy", "full MAML accuracy"],
                 [(r["steps"], r["best_pattern"] or "-", fmt(r["best_val_accuracy"]), fmt(r["full_val_accuracy"]))
                  for r in data["per_step"]]))
    for path in (files.html, files.png, files.json):
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- main

_PARSERS = [
    _train_parser, _specialize_parser, _import_parser, _evaluate_parser, _groups_parser, _bench_parser,
    _optimize_parser, _select_parser, _tune_parser,
    _studies_parser, _report_parser,
]

# Each command's --help ends with these examples (DATA: the folder holding the benchmark's archives).
_EXAMPLES = {
    "train": ["patternsearch train --benchmark omniglot-small --model conv4 --iterations 3000 --data-root DATA",
              "patternsearch train --benchmark sinusoid --model mlp --shots 5 --iterations 200 "
              "--checkpoint runs/sin.pt"],
    "specialize": ["patternsearch specialize --pattern 00010:5 --iterations 1000 --out runs/special.pt "
                   "--data-root DATA"],
    "import-checkpoint": ["patternsearch import-checkpoint my_maml.pt --out runs/mine.pt --model conv4 "
                          "--inner-lr 0.4 --eval-steps 10 --data-root DATA"],
    "evaluate": ["patternsearch evaluate --pattern 00010:5 --data-root DATA",
                 "patternsearch evaluate --pattern 00010:5 --split val --tasks 100 --json --data-root DATA"],
    "groups": ["patternsearch groups --model conv4", "patternsearch groups --model resnet12 --input-shape 3,84,84"],
    "bench": ["patternsearch bench --patterns 00010:5 00011:1 --data-root DATA"],
    "optimize": ["patternsearch optimize --trials 200 --data-root DATA     (rerun to resume, raise --trials to "
                 "extend)",
                 "patternsearch optimize --trials 200 --space phases --search-lr --study phases --data-root DATA"],
    "studies": ["patternsearch studies", "patternsearch studies --storage sqlite:///runs/study.db --json"],
    "report": ["patternsearch report --out report/ --data-root DATA"],
    "select": ["patternsearch select --max-degradation 0.01 --data-root DATA",
               "patternsearch select --pattern 00010:5 --checkpoint runs/special.pt --baseline-checkpoint "
               "patternsearch/checkpoints/omniglot-small-conv4-5w1s.pt --data-root DATA"],
    "tune": ["patternsearch tune --max-degradation 0.01 --budget 2h --data-root DATA     (rerun to resume)",
             "patternsearch tune --study flags --storage sqlite:///runs/flags.db --budget 30m --data-root DATA"],
}


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
    """The argument parser with every sub-command."""
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
    for add in _PARSERS:
        add(sub)
    for name, examples in _EXAMPLES.items():
        command = sub.choices[name]
        command.formatter_class = _HelpFormatter
        data = any("DATA" in line for line in examples)
        command.epilog = ("examples (DATA: the folder holding the benchmark's archives; leave --data-root out to "
                          "download them):" if data else "examples:") + "".join(f"\n  {line}" for line in examples)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    # Optuna would log the interrupted trial with a traceback; the one line main() prints says what matters.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    raise KeyboardInterrupt


def _interrupted(args: argparse.Namespace) -> str:
    """The one line printed after Ctrl-C: what is saved and how to continue."""
    again = "run the same command again to"
    if args.command == "optimize":
        from .search import safe_url

        return (f"interrupted: the finished trials are saved in {safe_url(args.storage)} (the interrupted one is "
                f"marked failed); {again} continue the study")
    if args.command in ("train", "specialize"):
        where = args.out if args.command == "specialize" else args.checkpoint or "the default checkpoint"
        return f"interrupted: the meta-training so far is saved in {where}; {again} resume it"
    if args.command == "tune":
        from .search import safe_url

        return (f"interrupted: the specialization so far is saved in {args.out or 'tuned/<study>'} and the tuning "
                f"study in {safe_url(args.storage)}; {again} continue")
    if args.command == "select":
        return f"interrupted: nothing was saved (select stores its answer when it ends); {again} start over"
    return f"interrupted: nothing was saved; {again} start over"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (2 bad input, 1 an unabsorbed divergence, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
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


if __name__ == "__main__":
    sys.exit(main())
