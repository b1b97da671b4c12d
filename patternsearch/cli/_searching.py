"""``optimize``, ``studies`` and ``report``: the pattern study, the storage's studies, a study's report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..report import write_report
from ..search import (
    DEFAULT_MAX_PHASES,
    DEFAULT_STORAGE,
    LR_SCALES,
    SAMPLERS,
    SPACES,
    list_studies,
    measured,
    optimize,
    pareto_trials,
)
from ..tables import optional, text_table
from ._command import Command
from ._options import add_experiment_options, add_json_option, add_seed, add_storage_options, positive_int, spec
from ._output import note, show


def _optimize_options(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser)
    add_storage_options(parser)
    parser.add_argument("--trials", type=int, default=200, help="target number of evaluated trials (default 200)")
    parser.add_argument("--tasks", type=int, default=200, help="fixed validation tasks per trial (default 200)")
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the validation tasks (default 0)")
    parser.add_argument("--max-steps", type=int, default=10,
                        help="largest inner-step count searched, all phases together (default 10)")
    parser.add_argument("--space", choices=SPACES, default="flags",
                        help="flags: one set of update flags for every step (default); phases: flags that change "
                             "between phases, e.g. 11111:1+00011:4")
    parser.add_argument("--max-phases", type=positive_int, default=None,
                        help=f"largest number of phases with --space phases (default {DEFAULT_MAX_PHASES})")
    parser.add_argument("--search-lr", action="store_true",
                        help="also search a scale of the inner learning rate per phase "
                             f"({', '.join(f'{s:g}' for s in LR_SCALES)})")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search algorithm (default tpe)")
    add_seed(parser, "sampler-seed", 0, "seed of the sampler")
    parser.add_argument("--baseline", default="full", help="baseline pattern (default full)")
    parser.add_argument("--time-metric", choices=["ratio", "latency", "flops"], default="ratio",
                        help="time objective: latency relative to the baseline (default), ms, or FLOPs")
    parser.add_argument("--latency-tasks", type=int, default=2, help="tasks timed per trial (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per task (default 3)")
    parser.add_argument("--train-iterations", type=positive_int, default=None,
                        help="meta-training iterations if no checkpoint exists yet")
    parser.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                        help="score every pattern on every task, even once a faster trial is surely more accurate")
    parser.add_argument("--heartbeat-interval", type=positive_int, default=10,
                        help="seconds between heartbeats; a dead worker's trial is retried after 3 intervals")


def _studies_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    add_json_option(parser, "a JSON list")


def _report_options(parser: argparse.ArgumentParser) -> None:
    add_storage_options(parser)
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default ./report)")
    parser.add_argument("--max-degradation", type=float, default=None,
                        help="accuracy budget of the plot's threshold (default: the one select ran with, else 0.01)")
    parser.add_argument("--data-root", default=None,
                        help="data folder, to score full MAML at the step counts the study did not try")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint the study was made with")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def _optimize(args: argparse.Namespace) -> int:
    study = optimize(
        args.trials, spec(args), storage=args.storage, study_name=args.study, tasks=args.tasks,
        task_seed=args.task_seed, max_steps=args.max_steps, space=args.space, max_phases=args.max_phases,
        search_lr=args.search_lr, sampler=args.sampler, seed=args.sampler_seed, baseline=args.baseline,
        time_metric=args.time_metric, latency_tasks=args.latency_tasks, repeats=args.repeats,
        train_iterations=args.train_iterations, early_stopping=args.early_stopping,
        heartbeat_interval=args.heartbeat_interval,
    )
    front = [measured(t) for t in pareto_trials(study)]
    print(f"Pareto front of study {study.study_name!r} ({len(front)} patterns):")
    print(text_table(["pattern", "accuracy (95% CI)", "latency ms", "speedup", "FLOPs"],
                     [(r.pattern, f"{r.accuracy:.4f} +/- {r.ci95:.4f}", f"{r.latency_ms:.2f}", f"{r.speedup:.1f}x",
                       f"{r.flops:.3g}") for r in front]))
    return 0


def _studies(args: argparse.Namespace) -> int:
    summaries = list_studies(args.storage)
    if args.json:
        print(json.dumps([s.as_dict() for s in summaries], indent=2))
        return 0
    print(text_table(
        ["study", "benchmark", "evaluated/target", "stopped early", "baseline acc", "best speedup (1 pt)"],
        [(s.name, s.benchmark or "-", f"{s.complete + s.stopped_early}/{s.target or '-'}", str(s.stopped_early),
          optional(s.baseline_accuracy), optional(s.best_speedup_within_1pt, ".1f")
          + ("x" if s.best_speedup_within_1pt else "")) for s in summaries]))
    return 0


def _report(args: argparse.Namespace) -> int:
    report = write_report(args.out, storage=args.storage, study_name=args.study,
                          max_degradation=args.max_degradation, data_root=args.data_root,
                          checkpoint=args.checkpoint, device=args.device)
    for line in report.notes:
        note(line)
    return show(report, as_json=False)


COMMANDS = (
    Command("optimize", "search Lambda patterns (multi-objective, resumable)",
            "Search the patterns of a meta-trained model for the best latency/accuracy trade-offs. --trials is the "
            "study's total target: rerunning resumes, a larger value extends.", _optimize_options, _optimize, (
                "patternsearch optimize --trials 200 --data-root DATA     (rerun to resume, raise --trials to extend)",
                "patternsearch optimize --trials 200 --space phases --search-lr --study phases --data-root DATA")),
    Command("studies", "list the studies in a storage", "List the studies in a storage.", _studies_options,
            _studies, ("patternsearch studies", "patternsearch studies --storage sqlite:///runs/study.db --json")),
    Command("report", "write the answer, Pareto plot, tables and importances of a study",
            "Write report.html (self-contained), pareto.png and report.json for a study. The headline is the pattern "
            "select confirmed (run select first); the plot and tables show the study's validation accuracies and "
            "estimated speedups. Reads the study, never writes it.", _report_options, _report,
            ("patternsearch report --out report/ --data-root DATA",)),
)
