"""Which sampler suits the pattern space? Score every pattern once, then replay each sampler on that table.

1. Scores every distinct pattern (each flag set at 1..max-steps steps, plus
   ``none``) on the study's validation tasks and times its adaptation (median
   of interleaved rounds).
2. Runs each sampler for ``--trials`` trials on an in-memory study whose
   objective looks the pattern up in that table (so every sampler sees the same
   noise-free problem), over several seeds.
3. Reports, per sampler, the mean number of distinct patterns tried and how
   often it found the true fastest pattern within ``--max-degradation`` of
   the baseline, and the mean speedup of what it found.

Run: python examples/sampler_comparison.py --storage sqlite:///studies/patternsearch.db \\
         --data-root ../shared/data/omniglot [--trials 200] [--seeds 5]
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import optuna

from patternsearch.adaptation import adapt
from patternsearch.measurement import CachedScorer, interleaved_latencies
from patternsearch.pattern import Pattern
from patternsearch.search import (
    CONFIG_ATTR,
    SAMPLERS,
    SearchSpace,
    StudyConfig,
    make_sampler,
    resolve_study,
    study_experiment,
)


def score_table(args: argparse.Namespace) -> tuple[dict[Pattern, tuple[float, float]], Pattern, int]:
    study = resolve_study(args.storage, args.study)
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = study_experiment(config, data_root=args.data_root, checkpoint=args.checkpoint, device="cpu")
    tasks = experiment.tasks("val", config.tasks, config.task_seed)
    scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
    groups, steps = len(experiment.groups), config.max_steps
    patterns = [Pattern.none(groups)] + [
        Pattern(flags, s) for flags in itertools.product([False, True], repeat=groups) if any(flags)
        for s in range(1, steps + 1)
    ]
    accuracy = {p: float(scorer.scores(p).mean()) for p in patterns}
    timed = tasks[: config.latency_tasks]
    latency = interleaved_latencies(
        {str(p): (lambda t, p=p: adapt(experiment.model, t.x_support, t.y_support, p, experiment.inner_lr,
                                       experiment.benchmark.loss_fn)) for p in patterns},
        timed, experiment.device, repeats=config.repeats,
    )
    table = {p: (latency[str(p)].median_ms, accuracy[p]) for p in patterns}
    return table, Pattern.parse(config.baseline), steps


def replay(sampler: str, seed: int, table: dict[Pattern, tuple[float, float]], baseline: Pattern, steps: int,
           trials: int) -> list[Pattern]:
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=make_sampler(sampler, seed))
    space = SearchSpace(baseline.num_groups, steps)
    study.enqueue_trial(space.params(baseline))
    tried: list[Pattern] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        pattern = space.suggest(trial)
        tried.append(pattern)
        return table[pattern]

    study.optimize(objective, n_trials=trials)
    return tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///studies/patternsearch.db")
    parser.add_argument("--study", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-degradation", type=float, default=0.01)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    table, baseline, steps = score_table(args)
    base_latency, base_accuracy = table[baseline]

    def best_within(patterns: list[Pattern]) -> Pattern:
        ok = [p for p in patterns if table[p][1] >= base_accuracy - args.max_degradation] or [baseline]
        return min(ok, key=lambda p: table[p][0])

    optimum = best_within(list(table))
    results = {"patterns": len(table), "optimum": str(optimum),
               "optimum_speedup": base_latency / table[optimum][0], "samplers": {}}
    for sampler in args.samplers:
        found, distinct = [], []
        for seed in range(args.seeds):
            tried = replay(sampler, seed, table, baseline, steps, args.trials)
            found.append(best_within(tried))
            distinct.append(len(set(tried)))
        results["samplers"][sampler] = {
            "distinct_patterns": float(np.mean(distinct)),
            "found_optimum": sum(p == optimum for p in found) / len(found),
            "mean_speedup_found": float(np.mean([base_latency / table[p][0] for p in found])),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
