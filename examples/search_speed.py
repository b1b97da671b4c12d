"""Search speed: the study's cached evaluator against a naive per-trial, per-task loop, in one run.

Replays the patterns of a finished study, in trial order, through both
evaluators on the study's own validation tasks:

* naive: every trial adapts every task from scratch (``score_tasks``), repeats included;
* fast: what ``optimize`` does (``CachedScorer``: prefix features and SGD
  trajectories reused, repeats not re-evaluated).

It prints both times, their ratio and the largest accuracy difference. Latency
measurement is the same in both and is not part of this comparison.

Run: python examples/search_speed.py --storage sqlite:///studies/patternsearch.db \\
         --data-root ../shared/data/omniglot [--study NAME] [--trials N]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from patternsearch.cached_scoring import CachedScorer
from patternsearch.devices import device_name
from patternsearch.scoring import score_tasks
from patternsearch.search._config import CONFIG_ATTR, StudyConfig
from patternsearch.search._confirm import resolve_study, study_experiment
from patternsearch.search._select import completed_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///studies/patternsearch.db")
    parser.add_argument("--study", default=None)
    parser.add_argument("--trials", type=int, default=None, help="replay only the first N trials")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    study = resolve_study(args.storage, args.study)
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = study_experiment(config, data_root=args.data_root, checkpoint=args.checkpoint, device="cpu")
    tasks = experiment.tasks("val", config.tasks, config.task_seed)
    patterns = [experiment.pattern(t.user_attrs["pattern"]) for t in completed_trials(study)][: args.trials]

    began = time.perf_counter()
    scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
    fast = {}
    for pattern in patterns:
        if pattern not in fast:
            fast[pattern] = scorer.scores(pattern).mean()
    fast_s = time.perf_counter() - began

    began = time.perf_counter()
    naive = [score_tasks(experiment.model, tasks, p, experiment.inner_lr, experiment.benchmark).mean()
             for p in patterns]
    naive_s = time.perf_counter() - began

    result = {
        "study": study.study_name, "trials": len(patterns), "distinct_patterns": len(fast), "tasks": len(tasks),
        "fast_s": fast_s, "naive_s": naive_s, "speedup": naive_s / fast_s,
        "max_accuracy_difference": max(abs(fast[p] - a) for p, a in zip(patterns, naive, strict=True)),
        "device": device_name(torch.device("cpu")),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['trials']} trials ({result['distinct_patterns']} distinct) x {result['tasks']} tasks on "
              f"{result['device']}: fast {fast_s:.1f} s, naive {naive_s:.1f} s, {result['speedup']:.1f}x; "
              f"largest accuracy difference {result['max_accuracy_difference']:.2e}")


if __name__ == "__main__":
    main()
