"""Seconds per meta-update of ``train --pattern P`` against full MAML, interleaved in one process.

One meta-update is what ``train`` does per iteration: adapt every task of a
meta-batch with P from the live parameters (second order by default), take the
query loss, and backpropagate it into every parameter
(:func:`patternsearch.training.accumulate_meta_gradient`). The optimizer step is
left out (the same for every pattern) and the weights never change, so every
variant measures the same work. Rounds rotate the order of the variants;
medians after a warm-up round.

    python examples/meta_update_cost.py --data-root ../shared/data/omniglot \\
        --patterns 11111:5 00010:5 00001:5 --json
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from patternsearch import ExperimentSpec, open_experiment
from patternsearch.measurement import environment
from patternsearch.training import meta_update_times


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--benchmark", default="omniglot-small")
    parser.add_argument("--patterns", nargs="+", default=["11111:5", "00010:5", "00001:5"],
                        help="inner-loop patterns; full MAML at the checkpoint's training steps is always added")
    parser.add_argument("--meta-batch", type=int, default=None, help="tasks per meta-update (default: the "
                        "checkpoint's)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--batches", type=int, default=2, help="meta-batches per round (default 2)")
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    experiment = open_experiment(ExperimentSpec(benchmark=args.benchmark, data_root=args.data_root,
                                                checkpoint=args.checkpoint, device=args.device))
    checkpoint = experiment.checkpoint
    meta_batch = args.meta_batch or int(checkpoint.config.get("meta_batch", 4))
    patterns = {text: experiment.pattern(text) for text in
                dict.fromkeys([f"{'1' * len(experiment.groups)}:{checkpoint.train_steps or 1}", *args.patterns])}
    timed = meta_update_times(experiment.model, experiment.benchmark, list(patterns.values()), experiment.inner_lr,
                              meta_batch=meta_batch, batches=args.batches, first_order=args.first_order,
                              device=experiment.device, rounds=args.rounds)
    stats = {text: timed[str(pattern)] for text, pattern in patterns.items()}
    groups = len(experiment.groups)
    rows = []
    for text, stat in stats.items():
        row = {"pattern": text, "seconds_per_meta_update": stat.median_ms / 1000.0,
               "iqr_seconds": stat.spread_ms / 1000.0, "samples": len(stat.samples_ms)}
        same_steps = stats.get(f"{'1' * groups}:{patterns[text].steps}")
        if same_steps is not None:  # full MAML with as many inner steps, timed in the same rounds
            row["vs_full_same_steps"] = stat.median_ms / same_steps.median_ms
        rows.append(row)
    result = {"machine": _cpu_name(), "threads": torch.get_num_threads(),
              "meta_batch": meta_batch, "second_order": not args.first_order, "rows": rows,
              "environment": environment()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in rows:
            ratio = (f"  {row['vs_full_same_steps']:.2f} of full MAML with as many steps"
                     if "vs_full_same_steps" in row else "")
            print(f"{row['pattern']:>12}: {row['seconds_per_meta_update']:.3f} s per meta-update "
                  f"(IQR {row['iqr_seconds']:.3f}){ratio}")


if __name__ == "__main__":
    main()
