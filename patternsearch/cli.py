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
from .errors import PatternsearchError, one_line

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
    parser.add_argument("--seed", type=int, default=0)
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
    parser.add_argument("--seed", type=int, default=1, help="seed of the training episodes (default 1)")
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
        first_order=args.first_order, seed=args.seed, val_every=args.val_every, val_tasks=args.val_tasks,
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
        first_order=args.first_order, seed=args.seed, val_every=args.val_every, val_tasks=args.val_tasks,
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
        "evaluate", help="score one pattern and time its adaptation",
        description="Adapt with one pattern on fixed tasks; report accuracy (95%% CI), latency and FLOPs.",
    )
    _add_experiment_options(parser)
    parser.add_argument("--pattern", default="full",
                        help="FLAGS:STEPS[@SCALE] phases joined by +, 'full' or 'none' (default full)")
    parser.add_argument("--baseline", default="full",
                        help="pattern timed next to it and compared with it on the same tasks (default full)")
    parser.add_argument("--baseline-checkpoint", type=Path, default=None,
                        help="adapt the baseline on this checkpoint instead (e.g. the parent of a specialized "
                             "--checkpoint); the comparison stays paired on the same tasks")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--tasks", type=_positive_int, default=600, help="number of tasks (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="task seed (default 0)")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from .measurement import CachedScorer, PatternEvaluator, environment
    from .uncertainty import estimate, support

    experiment = _open(args)
    reference = experiment if args.baseline_checkpoint is None else experiment.with_checkpoint(
        args.baseline_checkpoint)
    pattern, baseline = experiment.pattern(args.pattern), reference.pattern(args.baseline)
    tasks = experiment.tasks(args.split, args.tasks, args.seed)
    # Latency does not depend on the weights: the baseline is timed on the same model, interleaved.
    evaluator = PatternEvaluator(experiment, baseline, tasks, latency_tasks=5, repeats=args.repeats)
    result = evaluator.measure(pattern)
    baseline_scorer = evaluator.scorer if reference is experiment else CachedScorer(
        reference.model, reference.benchmark, tasks, reference.inner_lr)
    with evaluator.scorer.threads():  # the pattern's steps are stored: scoring it again costs query forwards only
        pattern_scores = evaluator.scorer.scores(pattern)
    with baseline_scorer.threads():
        baseline_scores = baseline_scorer.scores(baseline)
    base = estimate(baseline_scores, evaluator.design)
    difference = estimate(pattern_scores - baseline_scores, evaluator.design)
    baseline_name = f"{baseline}" + ("" if reference is experiment else f" on {reference.checkpoint_path}")
    if args.json:
        _print_json({**result.user_attrs(), "tasks": result.tasks_scored, "split": args.split,
                     "metric": experiment.benchmark.metric, "checkpoint": str(experiment.checkpoint_path),
                     "baseline": str(baseline), "baseline_checkpoint": str(reference.checkpoint_path),
                     "baseline_accuracy": base.mean, "baseline_ci95": base.ci95, "difference": difference.mean,
                     "difference_ci95": difference.ci95, "environment": environment()})
    else:
        print(f"pattern {result.pattern} on {result.tasks_scored} {args.split} tasks ({result.device})")
        print(f"  {experiment.benchmark.metric}: {result.accuracy:.4f} +/- {result.ci95:.4f} "
              f"(95% CI; {support(result.tasks_scored, result.classes, result.units)})")
        print(f"  baseline {baseline_name}: {base.describe()}")
        print(f"  paired difference: {difference.mean:+.4f} +/- {difference.ci95:.4f} (95% CI, same tasks)")
        print(f"  adaptation latency: {result.latency_ms:.2f} ms median (IQR {result.latency_iqr_ms:.2f} ms), "
              f"{result.speedup:.1f}x the baseline's {result.baseline_latency_ms:.2f} ms (interleaved)")
        print(f"  adaptation FLOPs: {result.flops:,}")
    return 0


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
        description="Index, name, parameter count and share of forward FLOPs of each layer group.",
    )
    _add_data_options(parser)
    parser.add_argument("--input-shape", type=_shape, default=None,
                        help="shape of one example, e.g. 1,28,28 (default: the benchmark's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=_groups)


def _groups(args: argparse.Namespace) -> int:
    import torch

    from .benchmarks import create_benchmark
    from .groups import group_summaries
    from .models import create_model

    if args.input_shape is not None:
        shape, outputs, model_name = args.input_shape, args.ways, args.model or "conv4"
    else:
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
    print(f"{model_name}: {len(rows)} layer groups (a pattern has one flag per group, in this order)")
    print(_table(["index", "group", "parameters", "FLOPs share"],
                 [(r.index, r.name, f"{r.parameters:,}", f"{100 * r.flops_share:.1f}%") for r in rows]))
    return 0


# --------------------------------------------------------------------------- bench


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="time patterns against full MAML and the plain PyTorch loop",
        description="Adaptation latency of each pattern, full MAML and a plain PyTorch MAML loop, measured "
                    "interleaved in one process after warm-up; medians, spreads and speedups.",
    )
    _add_experiment_options(parser)
    parser.add_argument("--patterns", nargs="+", required=True,
                        help="patterns to time (FLAGS:STEPS[@SCALE] phases joined by +, full, none)")
    parser.add_argument("--tasks", type=_positive_int, default=5, help="tasks per round (default 5)")
    parser.add_argument("--repeats", type=_positive_int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=_non_negative_int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--seed", type=int, default=0, help="task seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .measurement import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    experiment = _open(args)
    patterns = [experiment.pattern(text) for text in args.patterns]
    rows = bench(experiment, patterns, experiment.tasks(args.split, args.tasks, args.seed), repeats=args.repeats,
                 warmup=args.warmup)
    if args.json:
        _print_json([row.as_dict() for row in rows])
        return 0
    print(f"{rows[0].device}, {rows[0].threads} threads; {args.tasks} tasks x {args.repeats} rounds, interleaved")
    print(_table(
        ["variant", "pattern", "median ms", "IQR ms", "speedup", "vs full@same steps", "FLOPs",
         f"accuracy ({args.tasks} tasks)"],
        [(r.name, r.pattern, f"{r.latency_ms:.3f}", f"{r.latency_iqr_ms:.3f}", f"{r.speedup:.2f}x",
          "-" if r.speedup_same_steps is None else f"{r.speedup_same_steps:.2f}x", f"{r.flops:.3g}",
          f"{r.accuracy:.4f}") for r in rows],
    ))
    return 0


# --------------------------------------------------------------------------- search


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


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
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
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
        search_lr=args.search_lr, sampler=args.sampler, seed=args.seed, baseline=args.baseline,
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


def _select_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "select", help="pick the fastest pattern confirmed within an accuracy budget on test tasks",
        description="Validation proposes the fastest Pareto patterns within D of the baseline; they are tested "
                    "against the baseline on test tasks, slowest first, each confirmed when the lower confidence "
                    "bound of its paired accuracy difference is >= -D, stopping at the first that is not "
                    "(fixed-sequence testing). The fastest confirmed one is selected; its accuracy is then "
                    "measured on fresh test tasks that took no part in the decision.",
    )
    _add_storage_options(parser)
    parser.add_argument("--max-degradation", type=float, default=0.01,
                        help="allowed accuracy loss, in accuracy units (default 0.01 = one point)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="probability that the selected pattern is truly within the budget (default 0.95)")
    parser.add_argument("--candidates", type=_positive_int, default=5,
                        help="most candidates tested on the test split (default 5)")
    parser.add_argument("--tasks", type=int, default=600, help="confirmation tasks (default 600)")
    parser.add_argument("--report-tasks", type=int, default=None,
                        help="fresh test tasks for the reported accuracies (default: as many as --tasks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test tasks (default 0)")
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
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_select)


def _select(args: argparse.Namespace) -> int:
    from .search import confirm_pattern, select
    from .uncertainty import support

    if args.pattern is not None:
        result = confirm_pattern(
            _checkpoint_experiment(args.checkpoint, args.data_root, args.device), args.pattern, args.max_degradation,
            baseline=args.baseline, baseline_checkpoint=args.baseline_checkpoint, confidence=args.confidence,
            test_tasks=args.tasks, report_tasks=args.report_tasks, test_seed=args.seed,
        )
    else:
        result = select(
            args.max_degradation, storage=args.storage, study_name=args.study, confirm=not args.no_confirm,
            confidence=args.confidence, max_candidates=args.candidates, test_tasks=args.tasks,
            report_tasks=args.report_tasks, test_seed=args.seed, data_root=args.data_root,
            checkpoint=args.checkpoint, baseline_checkpoint=args.baseline_checkpoint, device=args.device,
        )
    if args.json:
        _print_json(result.as_dict())
        return 0
    verdict = "confirmed" if result.confirmed else "not confirmed"
    print(f"selected {result.pattern} ({'' if result.trial is None else f'trial {result.trial}, '}{verdict}): "
          f"{result.reason}")
    if result.val_accuracy is not None:
        print(f"  validation: {result.val_accuracy:.4f} vs baseline {result.baseline} "
              f"{result.baseline_val_accuracy:.4f}, speedup {result.val_speedup:.1f}x")
    if result.baseline_checkpoint and result.baseline_checkpoint != result.checkpoint:
        print(f"  checkpoints: {result.checkpoint} vs the baseline's {result.baseline_checkpoint}")
    if result.candidates:
        print(f"  candidates (tested slowest first) on {result.confirmation_tasks} confirmation tasks "
              f"({result.confirmation_classes or '-'} classes), one-sided {result.confidence:g} lower bounds:")
        for c in result.candidates:
            tested = "not tested (a slower one was not confirmed)" if c["lower_bound"] is None else (
                f"test {c['test_difference']:+.4f}, lower bound {c['lower_bound']:+.4f}, "
                + ("confirmed" if c["confirmed"] else "rejected"))
            validation = "" if c["val_difference"] is None else f"validation {c['val_difference']:+.4f}, "
            print(f"    {c['pattern']}: {validation}{tested}")
    if result.test_accuracy is not None:
        rests_on = support(result.test_tasks or 0, result.test_classes, result.test_units)
        fresh = "classes disjoint from the confirmation's" if result.classes_disjoint else \
            "the confirmation's classes, other episodes"
        print(f"  fresh test tasks ({rests_on}; {fresh}):")
        print(f"    {result.pattern}: {result.test_accuracy:.4f} +/- {result.test_ci95:.4f}; baseline "
              f"{result.baseline_test_accuracy:.4f} +/- {result.baseline_test_ci95:.4f}; difference "
              f"{result.difference:+.4f} +/- {result.difference_ci95:.4f} (95% CI)")
        print(f"  latency: {result.latency_ms:.2f} ms vs {result.baseline_latency_ms:.2f} ms, "
              f"speedup {result.speedup:.1f}x ({result.device})")
    return 0


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
        "report", help="write the Pareto plot, tables and importances of a study",
        description="Write pareto.png, report.html (self-contained) and report.json for a study.",
    )
    _add_storage_options(parser)
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default ./report)")
    parser.add_argument("--max-degradation", type=float, default=0.01,
                        help="accuracy budget of the highlighted selection (default 0.01)")
    parser.add_argument("--data-root", default=None, help="data folder, to score full MAML per step count")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint the study was made with")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from .report import build_report
    from .search import SelectionError, resolve_study

    if not 0.0 <= args.max_degradation <= 1.0:
        raise SelectionError(f"--max-degradation must be between 0 and 1, got {args.max_degradation}")
    study = resolve_study(args.storage, args.study)
    files, data = build_report(study, args.out, max_degradation=args.max_degradation, data_root=args.data_root,
                               checkpoint=args.checkpoint, device=args.device)
    choice = data["choice"]
    print(f"study {data['study']}: {data['complete']} complete + {data['stopped_early']} stopped early, target "
          f"{data['target']}; selected "
          f"{choice['selected']['pattern']} ({choice['selected']['speedup']:.1f}x, accuracy "
          f"{choice['selected']['accuracy']:.4f} vs baseline {choice['baseline']['accuracy']:.4f})")
    print(_table(["pattern", "accuracy", "latency ms", "speedup"],
                 [(r["pattern"], f"{r['accuracy']:.4f}", f"{r['latency_ms']:.2f}", f"{r['speedup']:.1f}x")
                  for r in data["pareto"]]))
    print("best pattern per step count:")

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    print(_table(["steps", "best pattern", "accuracy", "full MAML accuracy"],
                 [(r["steps"], r["best_pattern"] or "-", fmt(r["best_accuracy"]), fmt(r["full_accuracy"]))
                  for r in data["per_step"]]))
    for path in (files.png, files.html, files.json):
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- main

_PARSERS = [
    _train_parser, _specialize_parser, _import_parser, _evaluate_parser, _groups_parser, _bench_parser,
    _optimize_parser, _select_parser,
    _studies_parser, _report_parser,
]


class _Parser(argparse.ArgumentParser):
    """Reports usage errors on one line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


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
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except PatternsearchError as error:
        print(f"patternsearch: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patternsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
