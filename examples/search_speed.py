"""Search speed: the study's scoring against a naive per-trial, per-task loop, in one run.

Replays the trials of a finished study, in trial order, through both
evaluators on the study's own validation tasks, interleaved trial by trial
(fast, naive, fast, naive, ...) so that machine noise hits both alike:

* naive: every trial adapts every task from scratch (``patternsearch.adapt``), repeats
  included, no early stopping;
* fast: what ``optimize`` does: ``CachedScorer`` (prefix features and SGD
  trajectories reused), repeats not re-evaluated, and scoring stopped early
  once a faster, fully scored trial is surely more accurate (the same race, the
  same time objectives as recorded in the study).

It prints both times, their ratio, the largest accuracy difference over the
patterns both scored fully, and for every early stop whether the naive full
accuracies confirm it (the stopped pattern less accurate than the trial that
beat it). Latency measurement is the same in both and not part of this
comparison.

Run: python examples/search_speed.py --storage sqlite:///studies/patternsearch.db \\
         --data-root ../shared/data/omniglot [--study NAME] [--trials N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from patternsearch import adapt, functional_forward
from patternsearch.devices import device_name
from patternsearch.measurement import CachedScorer, Rival, race
from patternsearch.search import (
    CONFIG_ATTR,
    StudyConfig,
    counts_toward_target,
    measured,
    resolve_study,
    study_experiment,
)


def naive_scores(experiment, tasks, pattern) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Adapts every task from scratch, one at a time, with the default PyTorch threads."""
    model, benchmark = experiment.model, experiment.benchmark
    scores = []
    for task in tasks:
        params = adapt(model, task.x_support, task.y_support, pattern, experiment.inner_lr, benchmark.loss_fn)
        with torch.no_grad():
            scores.append(benchmark.score_fn(functional_forward(model, params, task.x_query), task.y_query))
    return np.array(scores)


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
    trials = [t for t in study.get_trials(deepcopy=False) if counts_toward_target(t)][: args.trials]

    scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
    fast: dict[str, tuple[np.ndarray, int | None]] = {}  # pattern -> (scores, dominated_by trial)
    naive: dict[str, np.ndarray] = {}
    replayed: list[bool] = []  # whether each distinct pattern stopped where (and by whom) the study stopped it
    objective_mismatches: list[int] = []  # trials whose replayed time objective is not the one the study stored
    rivals: list[Rival] = []
    fast_s = naive_s = 0.0
    for trial in trials:
        record = measured(trial)
        pattern = experiment.pattern(record.pattern)
        began = time.perf_counter()
        if record.pattern not in fast:
            mine = record.time_objective(config.time_metric)  # the value the study compared, as recorded
            if trial.values is not None and not np.isclose(mine, trial.values[0]):
                objective_mismatches.append(trial.number)
            is_baseline = record.pattern == config.baseline
            faster = [] if is_baseline else [r for r in rivals if r.time <= mine]
            outcome = race(lambda indices, p=pattern: scorer.scores(p, indices), len(tasks), faster)
            fast[record.pattern] = (outcome.scores, outcome.dominated_by)
            replayed.append(outcome.dominated_by == record.dominated_by)
            if outcome.dominated_by is None:
                rivals.append(Rival(trial.number, mine, outcome.scores))
        fast_s += time.perf_counter() - began
        began = time.perf_counter()
        naive[record.pattern] = naive_scores(experiment, tasks, pattern)
        naive_s += time.perf_counter() - began

    pattern_of = {t.number: measured(t).pattern for t in trials}
    full = [p for p, (_, by) in fast.items() if by is None]
    stops = [(p, by) for p, (_, by) in fast.items() if by is not None]
    wrong = [p for p, by in stops if naive[p].mean() >= naive[pattern_of[by]].mean()]
    result = {
        "study": study.study_name, "trials": len(trials), "distinct_patterns": len(fast), "tasks": len(tasks),
        "stopped_early": len(stops), "stops_contradicted_by_full_scores": wrong,
        "stops_as_in_the_study": sum(replayed), "stops_unlike_the_study": len(replayed) - sum(replayed),
        "time_objective_mismatches": objective_mismatches,
        "fast_s": fast_s, "naive_s": naive_s, "speedup": naive_s / fast_s,
        "max_accuracy_difference": max(abs(fast[p][0].mean() - naive[p].mean()) for p in full),
        "device": device_name(torch.device("cpu")),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['trials']} trials ({result['distinct_patterns']} distinct, {len(stops)} stopped early) x "
              f"{result['tasks']} tasks on {result['device']}: fast {fast_s:.1f} s, naive {naive_s:.1f} s, "
              f"{result['speedup']:.1f}x; largest accuracy difference {result['max_accuracy_difference']:.2e}; "
              f"early stops contradicted by full scores: {len(wrong)}; races that ended as in the study: "
              f"{result['stops_as_in_the_study']}/{len(replayed)}")


if __name__ == "__main__":
    main()
