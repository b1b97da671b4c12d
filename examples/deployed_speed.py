"""Adapt + predict of the selected pattern, deployed, against today's eager calls and full MAML: the README's numbers.

One process, every variant on the same test tasks, interleaved (rotating order), after warm-up; medians, and
ratios as medians of paired samples (same task, same round, back to back)::

    python examples/deployed_speed.py --data-root ../shared/data/omniglot --pattern 00011:2

Variants (adapt + predict the task's query batch, and adapting alone):

* ``deployed``: the pattern's :class:`~patternsearch.DeployedAdapter` (best layout, compiled where it pays);
* ``eager``: ``adapt`` + ``functional_forward`` with the tensors as given (``layout=False``): what a user
  calling them with ordinary NCHW tensors ran before they chose the layout themselves;
* ``eager channels-last``: the same calls in the layout they now choose (the path adaptation was measured
  on so far);
* ``full deployed``: full MAML on its own deployed adapter (the tool's speedups compare these two);
* ``full plain loop``: full MAML as a plain PyTorch loop (``reference_adapt``, NCHW, eager), what users run.

``--agreement-tasks N`` then compares the deployed adapter's predictions with eager ``adapt`` +
``functional_forward`` on N test tasks, and its accuracy with the scorer's (every command's).
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import patternsearch as ps
from patternsearch.devices import device_name
from patternsearch.measurement import CachedScorer, LatencyStats, interleaved_latencies

COMPILED = {"auto": None, "on": True, "off": False}


def timings(experiment: ps.Experiment, pattern: ps.Pattern, tasks: list[ps.Task], repeats: int,
            warmup: int, compiled: bool | None) -> dict[str, LatencyStats]:
    """Every variant, adapting and adapting + predicting, interleaved."""
    model, lr, full = experiment.model, experiment.inner_lr, experiment.full
    example = (tasks[0].x_support, tasks[0].y_support, tasks[0].x_query)
    deployed = ps.DeployedAdapter(model, pattern, lr, example=example, check_finite=False, compiled=compiled)
    full_deployed = ps.DeployedAdapter(model, full, lr, example=example, check_finite=False, compiled=compiled)
    print(f"pattern {pattern}: {deployed.path.describe()}\nfull {full}: {full_deployed.path.describe()}")

    def eager(layout: bool):  # type: ignore[no-untyped-def]
        def run(task: ps.Task, predict: bool):  # type: ignore[no-untyped-def]
            params = ps.adapt(model, task.x_support, task.y_support, pattern, lr, check_finite=False, layout=layout)
            if predict:
                with torch.no_grad():
                    return ps.functional_forward(model, params, task.x_query, layout=layout)
            return params
        return run

    def plain(task: ps.Task, predict: bool):  # type: ignore[no-untyped-def]
        params = ps.reference_adapt(model, task.x_support, task.y_support, full, lr, layout=False)
        if predict:
            with torch.no_grad():
                return ps.functional_forward(model, params, task.x_query, layout=False)
        return params

    calls = {"deployed": lambda t, p: deployed(t.x_support, t.y_support, t.x_query) if p
             else deployed.adapt(t.x_support, t.y_support),
             "eager": eager(False), "eager channels-last": eager(True),
             "full deployed": lambda t, p: full_deployed(t.x_support, t.y_support, t.x_query) if p
             else full_deployed.adapt(t.x_support, t.y_support),
             "full plain loop": plain}
    variants = {}
    for name, call in calls.items():
        variants[f"{name} adapt"] = lambda task, call=call: call(task, False)
        variants[f"{name} adapt+predict"] = lambda task, call=call: call(task, True)
    return interleaved_latencies(variants, tasks, experiment.device, repeats=repeats, warmup=warmup)


def agreement(experiment: ps.Experiment, pattern: ps.Pattern, count: int, compiled: bool | None) -> None:
    """Deployed predictions against eager ones, and deployed accuracy against the scorer's, on ``count`` tasks."""
    tasks = experiment.tasks("test", count, 0)
    model, lr = experiment.model, experiment.inner_lr
    deployed = ps.DeployedAdapter(model, pattern, lr, example=(tasks[0].x_support, tasks[0].y_support,
                                                               tasks[0].x_query), compiled=compiled)
    same, total, accuracies, largest = 0, 0, [], 0.0
    for task in tasks:
        logits = deployed(task.x_support, task.y_support, task.x_query)
        with torch.no_grad():
            eager = ps.functional_forward(model, ps.adapt(model, task.x_support, task.y_support, pattern, lr),
                                          task.x_query)
        same += int((logits.argmax(1) == eager.argmax(1)).sum())
        total += int(task.y_query.numel())
        largest = max(largest, float((logits - eager).abs().max()))
        accuracies.append(float((logits.argmax(1) == task.y_query).float().mean()))
    scores = CachedScorer(model, experiment.benchmark, tasks, lr).scores(pattern)
    differ = int((np.abs(np.asarray(accuracies) - scores) > 1e-9).sum())
    print(f"{deployed.path.describe()}\nagreement on {count} test tasks ({total} queries): deployed and eager "
          f"predict the same class for "
          f"{same}/{total} queries ({same / total:.4%}); largest logit difference {largest:.3g}; accuracy deployed "
          f"{np.mean(accuracies):.6f} vs the scorer's {scores.mean():.6f}; tasks whose accuracy differs: {differ}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--pattern", default="00011:2")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compiled", choices=list(COMPILED), default="auto",
                        help="the deployed adapters' compilation: where it pays (auto), everything (on), none (off)")
    parser.add_argument("--agreement-tasks", type=int, default=0)
    parser.add_argument("--agreement-compiled", action="store_true",
                        help="compile adaptation too in the agreement check (the CUDA path), not only where it pays")
    args = parser.parse_args()

    experiment = ps.open_experiment(ps.ExperimentSpec(data_root=args.data_root, checkpoint=args.checkpoint,
                                                      device="cpu"))
    pattern = experiment.pattern(args.pattern)
    print(f"host: {device_name(experiment.device)}; {platform.machine()}; torch {torch.__version__}; one process, "
          f"{args.tasks} test tasks x {args.repeats} rounds, interleaved, after {args.warmup} warm-up rounds")
    if args.tasks:
        report_timings(experiment, pattern, args)
    if args.agreement_tasks:
        agreement(experiment, pattern, args.agreement_tasks, True if args.agreement_compiled else None)


def report_timings(experiment: ps.Experiment, pattern: ps.Pattern, args: argparse.Namespace) -> None:
    """Times every variant and prints the medians and the paired speedups the README quotes."""
    stats = timings(experiment, pattern, experiment.tasks("test", args.tasks, 0), args.repeats, args.warmup,
                    COMPILED[args.compiled])
    for name, value in stats.items():
        print(f"  {name:32s} {value.median_ms:8.2f} ms (IQR {value.spread_ms:.2f})")
    both = "adapt+predict"
    mine = stats[f"deployed {both}"]
    print(f"deployed adapt + predict of {pattern}: {mine.median_ms:.2f} ms, paired speedups:")
    for other in ("eager", "eager channels-last", "full deployed", "full plain loop"):
        print(f"  vs {other:22s} {mine.speedup_over(stats[f'{other} {both}']):.2f}x")
    print(f"deployed adaptation alone vs eager channels-last adaptation: "
          f"{stats['deployed adapt'].speedup_over(stats['eager channels-last adapt']):.2f}x")


if __name__ == "__main__":
    main()
