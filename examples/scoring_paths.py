"""Which scoring path is faster on this device: tasks on parallel threads, or tasks batched with vmap.

Scores a few patterns on the study's validation tasks with two fresh
``CachedScorer``s, ``batch_tasks=False`` (one task at a time, task shards on
parallel threads: the CPU default) and ``batch_tasks=True`` (the tasks of a
call stacked through ``torch.func.vmap``: the CUDA default), alternating the
two in each round so a shared machine's drift hits both alike. Every round
starts from empty caches (the cost of a pattern scored for the first time,
prefix features included), and the scores of the two paths are compared.

    python examples/scoring_paths.py --data-root ../shared/data/omniglot --json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from patternsearch import ExperimentSpec, open_experiment
from patternsearch.measurement import CachedScorer, environment

PATTERNS = ("11111:10", "00010:5", "00011:1", "11111:1+00001:4@2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    experiment = open_experiment(ExperimentSpec(data_root=args.data_root, checkpoint=args.checkpoint,
                                                device=args.device))
    tasks = experiment.tasks("val", args.tasks, 0)
    seconds: dict[str, dict[str, list[float]]] = {text: {"threads": [], "batched": []} for text in args.patterns}
    largest_difference = 0.0
    for round_index in range(args.rounds):
        order = ["threads", "batched"] if round_index % 2 == 0 else ["batched", "threads"]
        for text in args.patterns:
            pattern = experiment.pattern(text)
            scores = {}
            for path in order:
                scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr,
                                      batch_tasks=path == "batched")
                began = time.perf_counter()
                with scorer.threads():
                    scores[path] = scorer.scores(pattern)
                seconds[text][path].append(time.perf_counter() - began)
            largest_difference = max(largest_difference, float(np.abs(scores["threads"] - scores["batched"]).max()))
    rows = [{"pattern": text, "threads_s": float(np.median(v["threads"])), "batched_s": float(np.median(v["batched"])),
             "batched_over_threads": float(np.median(v["batched"]) / np.median(v["threads"]))}
            for text, v in seconds.items()]
    result = {"device": str(experiment.device), "tasks": args.tasks, "rounds": args.rounds, "rows": rows,
              "largest_score_difference": largest_difference, "environment": environment()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in rows:
            print(f"{row['pattern']:>20}: threads {row['threads_s']:.2f} s, batched {row['batched_s']:.2f} s "
                  f"({row['batched_over_threads']:.2f}x)")
        print(f"largest per-task score difference between the paths: {largest_difference:.4f}")


if __name__ == "__main__":
    main()
