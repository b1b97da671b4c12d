"""Compare two search spaces of one checkpoint: both Pareto fronts on one plot, and a table.

Reads (and with ``--trials``, first runs or extends) a ``flags`` study and a
``phases --search-lr`` study of the same checkpoint and validation tasks, and
writes ``compare_spaces.png`` and ``compare_spaces.json``. It prints, for a
few accuracy budgets, the fastest validation pattern of each space within the
budget of its own baseline (validation numbers: the guarantee comes from
``patternsearch select``, which confirms a choice on test tasks).

    python examples/compare_spaces.py --data-root ../shared/data/omniglot \\
        --storage sqlite:///runs/spaces.db --trials 200 --out runs/compare
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure

from patternsearch import ExperimentSpec
from patternsearch.search import (
    CONFIG_ATTR,
    SelectionError,
    baseline_trial,
    completed_trials,
    measured,
    optimize,
    pareto_trials,
    resolve_study,
    validation_choice,
)

BUDGETS = (0.0, 0.005, 0.01, 0.02)
SPACES = {"flags": {"space": "flags"}, "phases": {"space": "phases", "search_lr": True}}
SAME = ("benchmark", "model", "ways", "shots", "queries", "checkpoint_sha256", "tasks", "task_seed", "baseline",
        "time_metric", "device")


def _point(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    record = measured(trial)
    return {"pattern": record.pattern, "accuracy": record.accuracy, "ci95": record.ci95, "speedup": record.speedup,
            "latency_ms": record.latency_ms}


def _fastest_within(study: optuna.Study, budget: float) -> dict[str, Any] | None:
    try:
        return _point(validation_choice(study, budget).selected)
    except SelectionError:
        return None


def compare(studies: dict[str, optuna.Study]) -> dict[str, Any]:
    """Fronts, baselines and fastest patterns per budget of each study.

    Raises:
        SystemExit: If the studies were not measured against the same checkpoint and tasks.
    """
    configs = {name: study.user_attrs[CONFIG_ATTR] for name, study in studies.items()}
    first, *others = configs.values()
    for other in others:
        differing = [key for key in SAME if first.get(key) != other.get(key)]
        if differing:
            raise SystemExit(f"the studies differ in {', '.join(differing)}: their fronts are not comparable")
    return {
        name: {
            "study": study.study_name,
            "trials": len(completed_trials(study)),
            "space": {k: configs[name].get(k) for k in ("space", "max_phases", "search_lr", "max_steps")},
            "baseline": _point(baseline_trial(study)),
            "front": [_point(t) for t in pareto_trials(study)],
            "fastest_within": {f"{budget:g}": _fastest_within(study, budget) for budget in BUDGETS},
        }
        for name, study in studies.items()
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Both fronts (speedup on a log axis, validation accuracy) and each baseline's 1-point line."""
    figure = Figure(figsize=(8, 5.5), dpi=110)
    axes = figure.add_subplot()
    low = min(data["baseline"]["accuracy"] for data in result.values()) - 0.03
    for (name, data), color in zip(result.items(), ("tab:blue", "tab:orange"), strict=False):
        front = sorted((p for p in data["front"] if p["accuracy"] >= low), key=lambda p: p["speedup"])
        hidden = len(data["front"]) - len(front)
        axes.plot([p["speedup"] for p in front], [p["accuracy"] for p in front], "-o", markersize=4, color=color,
                  label=f"{name}: {data['trials']} trials" + (f" ({hidden} front points below)" if hidden else ""))
        axes.axhline(data["baseline"]["accuracy"] - 0.01, linestyle="--", linewidth=1, color=color, alpha=0.7,
                     label=f"{name} baseline - 0.01")
    axes.set_ylim(low, None)
    axes.set_xscale("log")
    axes.set_xlabel("adaptation speedup over full MAML (x, log scale)")
    axes.set_ylabel("accuracy (validation)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def _table(result: dict[str, Any]) -> str:
    names = list(result)
    lines = ["| budget | " + " | ".join(f"{n}: pattern, val. accuracy, speedup" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for budget in BUDGETS:
        cells = []
        for name in names:
            point = result[name]["fastest_within"][f"{budget:g}"]
            cells.append("-" if point is None else
                         f"{point['pattern']}, {point['accuracy']:.4f} ± {point['ci95']:.4f}, "
                         f"{point['speedup']:.1f}x")
        lines.append(f"| {budget * 100:g} pt | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///studies/patternsearch.db", help="storage of both studies")
    parser.add_argument("--flags-storage", default=None, help="storage of the flags study (default --storage)")
    parser.add_argument("--phases-storage", default=None, help="storage of the phases study (default --storage)")
    parser.add_argument("--flags-study", default="flags", help="name of the flags-space study")
    parser.add_argument("--phases-study", default="phases", help="name of the phases --search-lr study")
    parser.add_argument("--trials", type=int, default=None, help="run or extend both studies to this many trials")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--benchmark", default="omniglot-small")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="compare_spaces", help="output folder")
    args = parser.parse_args()
    names = {"flags": args.flags_study, "phases": args.phases_study}
    storages = {"flags": args.flags_storage or args.storage, "phases": args.phases_storage or args.storage}
    if args.trials is not None:
        for kind, options in SPACES.items():
            spec = ExperimentSpec(benchmark=args.benchmark, data_root=args.data_root, checkpoint=args.checkpoint,
                                  device=args.device)
            optimize(args.trials, spec, storage=storages[kind], study_name=names[kind], **options)
    result = compare({kind: resolve_study(storages[kind], name) for kind, name in names.items()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "compare_spaces.png")
    (out / "compare_spaces.json").write_text(json.dumps(result, indent=2))
    print(_table(result))
    print(f"wrote {out / 'compare_spaces.png'} and {out / 'compare_spaces.json'}")


if __name__ == "__main__":
    main()
