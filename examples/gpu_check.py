"""The prepared GPU check: equivalence, latency table, a short study and select, as one JSON summary.

On a CUDA machine (under 5 minutes on one modern GPU):

    python examples/gpu_check.py --data-root ../shared/data/omniglot --out runs/gpu

1. **Equivalence** with TF32 off (``exact_precision``): ``adapt`` against the
   naive ``reference_adapt`` on the device for full MAML and random patterns
   (largest relative error over all parameters), and the batched (vmap)
   scorer against one task at a time (largest score difference).
2. **Latency**: ``bench`` of full MAML, the plain PyTorch loop and a few
   patterns, interleaved, CUDA events on the device's stream.
3. **Search**: a short ``optimize`` study (default 30 trials) and ``select``.
4. **Deployed**: full MAML and the selected pattern (the answer), eager
   (``adapt`` + ``functional_forward``) against the deployed adapter (on CUDA:
   compiled with CUDA graphs), adapting and adapting + predicting,
   interleaved; the path each ran and the largest logit difference.

Everything runs with the device's default precision settings except step 1;
the summary records them (``environment``). ``--device cpu`` runs the same
code on the CPU (the test suite does, with tiny settings).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from patternsearch import (
    ExperimentSpec,
    Pattern,
    adapt,
    functional_forward,
    open_experiment,
    optimize,
    reference_adapt,
    select,
)
from patternsearch.devices import device_name
from patternsearch.measurement import (
    CachedScorer,
    adaptation_call,
    bench,
    deployed_adapter,
    deployed_calls,
    environment,
    exact_precision,
    interleaved_latencies,
    with_prediction,
)

BENCH_PATTERNS = ("00010:2", "00011:1", "00001:10", "00011:10")


def equivalence(experiment, tasks, patterns: int, seed: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Largest relative parameter error of ``adapt`` vs the reference, and largest batched-vs-single score gap."""
    rng = np.random.default_rng(seed)
    groups = len(experiment.groups)
    chosen = [experiment.full] + [
        Pattern(tuple(bool(b) for b in rng.integers(0, 2, groups)), int(rng.integers(1, 6))).canonical()
        for _ in range(patterns)]
    worst = 0.0
    with exact_precision():
        for pattern in chosen:
            for task in tasks[:3]:
                fast = adapt(experiment.model, task.x_support, task.y_support, pattern, experiment.inner_lr,
                             experiment.benchmark.loss_fn)
                slow = reference_adapt(experiment.model, task.x_support, task.y_support, pattern, experiment.inner_lr,
                                       experiment.benchmark.loss_fn)
                worst = max(worst, max(float((fast[k] - slow[k]).abs().max() / (slow[k].abs().max() + 1e-12))
                                       for k in slow))
        batched = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr, batch_tasks=True)
        single = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr, batch_tasks=False)
        gap = max(float(np.abs(batched.scores(p) - single.scores(p)).max()) for p in chosen)
    return {"patterns": len(chosen), "max_relative_error": worst, "max_batched_score_difference": gap}


def deployed_vs_eager(experiment, patterns, tasks, repeats: int) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Eager and deployed adaptation and adapt + predict of each pattern, interleaved, with the deployed path."""
    model, lr, loss_fn = experiment.model, experiment.inner_lr, experiment.benchmark.loss_fn
    variants, adapters = {}, {}
    for pattern in patterns:
        name = str(pattern)
        adapters[name] = deployed_adapter(model, pattern, lr, loss_fn, tasks[0])
        eager = adaptation_call(model, pattern, lr, loss_fn)
        variants[f"{name} eager"], variants[f"{name} eager+predict"] = eager, with_prediction(model, eager)
        variants[f"{name} deployed"], variants[f"{name} deployed+predict"] = deployed_calls(adapters[name])
    stats = interleaved_latencies(variants, tasks, experiment.device, repeats=repeats, warmup=2)
    rows = []
    for name, adapter in adapters.items():
        task = tasks[0]
        with torch.no_grad():
            eager_logits = functional_forward(model, adapt(model, task.x_support, task.y_support, adapter.pattern, lr,
                                                           loss_fn), task.x_query)
        gap = float((adapter(task.x_support, task.y_support, task.x_query) - eager_logits).abs().max())
        rows.append({"pattern": name, "path": adapter.path.describe(), "max_logit_difference": gap,
                     **{f"{kind}_ms": stats[f"{name} {kind}"].median_ms
                        for kind in ("eager", "deployed", "eager+predict", "deployed+predict")},
                     "deployed_speedup_adapt": stats[f"{name} deployed"].speedup_over(stats[f"{name} eager"]),
                     "deployed_speedup_adapt_predict": stats[f"{name} deployed+predict"].speedup_over(
                         stats[f"{name} eager+predict"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=200, help="validation tasks of the study")
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--bench-tasks", type=int, default=5)
    parser.add_argument("--bench-repeats", type=int, default=10)
    parser.add_argument("--random-patterns", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    spec = ExperimentSpec(data_root=args.data_root, device=args.device)
    experiment = open_experiment(spec)
    tasks = experiment.tasks("val", 24, 0)
    summary: dict[str, object] = {"device": device_name(experiment.device), "environment": environment()}
    summary["equivalence"] = equivalence(experiment, tasks, args.random_patterns, seed=0)

    patterns = [experiment.pattern(p) for p in BENCH_PATTERNS]
    rows = bench(experiment, patterns, tasks[: args.bench_tasks], repeats=args.bench_repeats)
    summary["bench"] = [{k: v for k, v in row.as_dict().items() if k != "environment"} for row in rows]

    storage = f"sqlite:///{args.out.resolve()}/study.db"
    started = time.perf_counter()
    study = optimize(args.trials, spec, storage=storage, tasks=args.tasks, progress=False)
    summary["study"] = {"trials": args.trials, "seconds": time.perf_counter() - started,
                        "complete": sum(t.state.name == "COMPLETE" for t in study.trials)}
    started = time.perf_counter()
    choice = select(0.01, storage=storage, data_root=args.data_root, device=args.device,
                    test_tasks=args.test_tasks, timed_tasks=args.bench_tasks, timed_rounds=args.bench_repeats)
    summary["select"] = {**{k: v for k, v in choice.to_dict().items() if k != "confirmation"},
                         "candidates": len(choice.confirmation.candidates), "look": asdict(choice.confirmation.look),
                         "seconds": time.perf_counter() - started}
    answer = [experiment.full] + ([experiment.pattern(choice.pattern)] if choice.pattern != str(experiment.full)
                                  else [])
    summary["deployed"] = deployed_vs_eager(experiment, answer, tasks[: args.bench_tasks], args.bench_repeats)
    summary["total_seconds"] = time.perf_counter() - began
    text = json.dumps(summary, indent=2, default=str)
    (args.out / "summary.json").write_text(text)
    print(text)


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = False
    main()
