"""The report's Pareto plot: validation accuracy against estimated speedup, around the decision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from ..pattern import Pattern
from ..search import CONFIG_ATTR, ValidationChoice, completed_trials, measured, pareto_trials, stopped_early_trials


def _speedup_axis(study: optuna.Study, baseline: FrozenTrial) -> tuple[Callable[[FrozenTrial], float], str]:
    """Each trial's estimated speedup over the baseline for the study's time metric, and the axis label.

    With the ``ratio`` and ``latency`` metrics it is the speedup the study
    measured next to the trial; with ``flops`` the ratio of FLOPs.
    """
    metric = study.user_attrs.get(CONFIG_ATTR, {}).get("time_metric", "ratio")
    if metric == "flops":
        base = max(float(measured(baseline).flops), 1.0)
        return (lambda t: base / max(float(measured(t).flops), 1.0)), "FLOP reduction over the baseline (log scale)"
    return (lambda t: float(measured(t).speedup)), "estimated speedup over the baseline (validation; x, log scale)"


def accuracy_window(choice: ValidationChoice, accuracies: list[float], max_degradation: float) -> tuple[float, float]:
    """The accuracy range where the decision happens: a margin below the threshold up to the best trial."""
    margin = max(max_degradation, 0.005)
    top = max(accuracies + [float(measured(choice.baseline).accuracy)])
    low = min(choice.threshold, float(measured(choice.selected).accuracy)) - 1.5 * margin
    return low, top + 0.6 * margin  # room for the labels above the best trial


def adapts(trial: FrozenTrial) -> bool:
    """False for ``none`` (no adaptation), whose speedup would stretch the axis."""
    return not Pattern.parse(measured(trial).pattern).is_none


def plot(study: optuna.Study, choice: ValidationChoice, selected: str | None, max_degradation: float,
         window: tuple[float, float], path: Path) -> None:
    """Writes the Pareto plot: validation accuracy against estimated speedup, the threshold, the selection."""
    from adjustText import adjust_text  # matplotlib is imported when a report is drawn, not with the package
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    trials = [t for t in completed_trials(study) if adapts(t)]
    stopped = [t for t in stopped_early_trials(study) if adapts(t)]
    x, label = _speedup_axis(study, choice.baseline)
    front = sorted((t for t in pareto_trials(study) if adapts(t)), key=x)
    accuracy: Callable[[FrozenTrial], float] = lambda t: float(measured(t).accuracy)  # noqa: E731
    low, high = window
    figure = Figure(figsize=(8, 5.5), dpi=110)
    axes = figure.add_subplot()
    axes.scatter([x(t) for t in trials], [accuracy(t) for t in trials],
                 s=14, alpha=0.3, color="tab:gray", label="trials")
    if stopped:
        axes.scatter([x(t) for t in stopped], [accuracy(t) for t in stopped], s=14, alpha=0.35,
                     marker="x", color="tab:gray", label="stopped early (accuracy on the tasks scored)")
    axes.plot([x(t) for t in front], [accuracy(t) for t in front],
              "-o", color="tab:blue", markersize=5, label="Pareto front")
    axes.axhline(choice.threshold, linestyle="--", color="tab:red", linewidth=1,
                 label=f"baseline - {max_degradation:g}")
    marked = {measured(choice.baseline).pattern: ("baseline", "black")}
    if selected is not None and selected != measured(choice.baseline).pattern:
        marked[selected] = ("selected by select", "tab:green")
    texts = []
    for trial in front + [choice.baseline]:
        pattern = measured(trial).pattern
        if not low <= accuracy(trial) <= high or any(t.get_text().startswith(pattern) for t in texts):
            continue
        name, color = marked.get(pattern, ("", "tab:blue"))
        if name:
            axes.scatter([x(trial)], [accuracy(trial)], s=70, color=color, zorder=5)
        texts.append(axes.text(x(trial), accuracy(trial), f"{pattern}" + (f" ({name})" if name else ""),
                               fontsize=8 if not name else 9, color=color))
    below = [accuracy(t) for t in trials + stopped if accuracy(t) < low]
    notes = [f"{len(below)} trials below {low:.3f} not shown (lowest {min(below):.3f})"] if below else []
    if len(trials) < len(completed_trials(study)):
        notes.append("'none' (no adaptation) not shown")
    if notes:
        axes.text(0.01, 0.01, "; ".join(notes), transform=axes.transAxes, fontsize=8, color="tab:gray",
                  va="bottom")
    axes.set_ylim(low, high)
    axes.set_xscale("log")
    times = FuncFormatter(lambda value, _: f"{value:g}x")
    axes.xaxis.set_major_formatter(times)
    xs = [x(t) for t in trials + stopped] or [1.0]
    axes.xaxis.set_minor_formatter(times if max(xs) < 10 * min(xs) else NullFormatter())
    axes.set_xlabel(label)
    axes.set_ylabel(study.user_attrs.get(CONFIG_ATTR, {}).get("metric", "accuracy") + " (validation)")
    axes.set_title(f"{study.study_name}: {len(completed_trials(study)) + len(stopped_early_trials(study))} trials")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=9)
    figure.tight_layout()
    if texts:
        adjust_text(texts, ax=axes, arrowprops={"arrowstyle": "-", "color": "tab:gray", "lw": 0.5})
    figure.savefig(path)
