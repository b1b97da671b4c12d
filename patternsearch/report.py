"""``patternsearch report``: Pareto plot, per-step table and layer-group importance of a study."""

from __future__ import annotations

import base64
import html
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from .benchmarks._archives import atomic_write_bytes
from .errors import PatternsearchError
from .measurement import CachedScorer
from .pattern import Pattern
from .search import (
    CONFIG_ATTR,
    SELECTION_ATTR,
    TARGET_ATTR,
    Choice,
    StudyConfig,
    choose,
    completed_trials,
    measured,
    pareto_trials,
    stopped_early_trials,
    study_experiment,
)
from .uncertainty import TaskDesign, estimate, support


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the written report."""

    png: Path
    html: Path
    json: Path


def _row(trial: FrozenTrial) -> dict[str, Any]:
    record = measured(trial)
    return {
        "trial": trial.number, "pattern": record.pattern, "accuracy": record.accuracy, "ci95": record.ci95,
        "latency_ms": record.latency_ms, "speedup": record.speedup, "flops": record.flops,
    }


def _unique(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if "repeat_of" not in t.user_attrs]


def full_by_steps(study: optuna.Study, config: StudyConfig, *, data_root: str | os.PathLike[str] | None,
                  checkpoint: str | os.PathLike[str] | None, device: str) -> dict[int, dict[str, float]]:
    """Accuracy of full MAML at every step count on the study's validation tasks.

    Patterns the study evaluated are read from it; the others are scored on
    the same tasks (the study itself is never written).
    """
    known: dict[int, dict[str, float]] = {}
    groups = len(config.groups)
    for trial in _unique(completed_trials(study)):
        pattern = Pattern.parse(measured(trial).pattern)
        if pattern == Pattern.full(groups, pattern.steps) and pattern.steps > 0:
            known[pattern.steps] = {"accuracy": measured(trial).accuracy, "ci95": measured(trial).ci95}
    missing = [s for s in range(1, config.max_steps + 1) if s not in known]
    if missing:
        experiment = study_experiment(config, data_root=data_root, checkpoint=checkpoint, device=device)
        tasks = experiment.tasks("val", config.tasks, config.task_seed)
        scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
        for steps in missing:
            accuracy = estimate(scorer.scores(Pattern.full(groups, steps)), TaskDesign.of(tasks))
            known[steps] = {"accuracy": accuracy.mean, "ci95": accuracy.ci95}
    return dict(sorted(known.items()))


def per_step_table(study: optuna.Study, full: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """For each step count, the most accurate pattern next to full MAML at that step count."""
    best: dict[int, FrozenTrial] = {}
    for trial in _unique(completed_trials(study)):
        steps = Pattern.parse(measured(trial).pattern).steps
        if steps and (steps not in best or measured(trial).accuracy > measured(best[steps]).accuracy):
            best[steps] = trial
    rows = []
    for steps in sorted(set(best) | set(full)):
        trial = best.get(steps)
        rows.append({
            "steps": steps,
            "best_pattern": measured(trial).pattern if trial else None,
            "best_accuracy": measured(trial).accuracy if trial else None,
            "best_speedup": measured(trial).speedup if trial else None,
            "full_accuracy": full.get(steps, {}).get("accuracy"),
            "full_ci95": full.get(steps, {}).get("ci95"),
        })
    return rows


def importances(study: optuna.Study, config: StudyConfig) -> dict[str, dict[str, float]]:
    """The fANOVA importance of each trial parameter (flags, steps, ...) for accuracy and for time.

    Every trial of a study has the same parameters (a later phase that is
    absent has ``pk_steps`` 0, see :class:`~patternsearch.search.SearchSpace`),
    so each parameter is ranked; the names are the space's labels.
    """
    names = config.search_space().labels(list(config.groups))
    result: dict[str, dict[str, float]] = {}
    for label, index in (("accuracy", 1), ("time", 0)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(
                    study, target=lambda t, i=index: t.values[i],
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                )
        except (RuntimeError, ValueError):
            values = {}
        result[label] = {names.get(k, k): float(v) for k, v in values.items()}
    return result


def _confirmed_choice(study: optuna.Study, choice: Choice, max_degradation: float) -> Choice:
    """The choice with the pattern ``select`` confirmed on the test split first, when select ran with this budget."""
    stored = study.user_attrs.get(SELECTION_ATTR) or {}
    if stored.get("max_degradation") != max_degradation or stored.get("test_accuracy") is None:
        return choice
    confirmed = [t for t in choice.candidates if measured(t).pattern == stored.get("pattern")]
    if not confirmed:
        return choice
    rest = tuple(t for t in choice.candidates if t is not confirmed[0])
    return Choice((confirmed[0], *rest), choice.baseline, choice.threshold, choice.mixed_devices)


def _speedup_axis(study: optuna.Study, baseline: FrozenTrial) -> tuple[Any, str]:
    """Each trial's speedup over the baseline for the study's time metric, and the axis label.

    With the ``ratio`` and ``latency`` metrics it is the baseline's latency
    measured next to the trial divided by the trial's; with ``flops`` the
    ratio of FLOPs.
    """
    metric = study.user_attrs.get(CONFIG_ATTR, {}).get("time_metric", "ratio")
    if metric == "flops":
        base = max(float(measured(baseline).flops), 1.0)
        return (lambda t: base / max(float(measured(t).flops), 1.0)), "FLOP reduction over the baseline (log)"
    return (lambda t: float(measured(t).speedup)), "adaptation speedup over the baseline (x, log scale)"


def _accuracy_window(choice: Choice, accuracies: list[float], max_degradation: float) -> tuple[float, float]:
    """The accuracy range where the decision happens: a margin below the threshold up to the best trial."""
    margin = max(max_degradation, 0.005)
    top = max(accuracies + [float(measured(choice.baseline).accuracy)])
    low = min(choice.threshold, float(measured(choice.selected).accuracy)) - 1.5 * margin
    return low, top + 0.25 * margin


def _plot(study: optuna.Study, choice: Choice, max_degradation: float, window: tuple[float, float],
          path: Path) -> None:
    trials = completed_trials(study)
    stopped = stopped_early_trials(study)
    x, label = _speedup_axis(study, choice.baseline)
    front = sorted(pareto_trials(study), key=x)
    accuracy = lambda t: float(measured(t).accuracy)  # noqa: E731
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
    for name, trial, color, offset in (("baseline", choice.baseline, "black", 6),
                                       ("selected", choice.selected, "tab:green", -14)):
        axes.scatter([x(trial)], [accuracy(trial)], s=70, color=color, zorder=5)
        axes.annotate(f"{name}: {measured(trial).pattern} ({x(trial):.1f}x)", (x(trial), accuracy(trial)),
                      xytext=(6, offset), textcoords="offset points", fontsize=9, color=color)
    below = [accuracy(t) for t in trials + stopped if accuracy(t) < low]
    if below:
        axes.text(0.01, 0.01, f"{len(below)} trials below {low:.3f} not shown (lowest {min(below):.3f})",
                  transform=axes.transAxes, fontsize=8, color="tab:gray", va="bottom")
    axes.set_ylim(low, high)
    axes.set_xscale("log")
    axes.set_xlabel(label)
    axes.set_ylabel(study.user_attrs.get(CONFIG_ATTR, {}).get("metric", "accuracy") + " (validation)")
    axes.set_title(f"{study.study_name}: {len(trials) + len(stopped)} trials")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def _html_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape("-" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _selection_html(selection: dict[str, Any]) -> str:
    """The decision in words, its numbers as rows, and every candidate's test."""
    def pm(mean: float | None, half: float | None) -> str | None:
        return None if mean is None else f"{mean:.4f} ± {half or 0.0:.4f}"

    rests_on = support(selection.get("test_tasks") or 0, selection.get("test_classes"), selection.get("test_units"))
    rows = [
        {"quantity": "selected pattern", "value": selection["pattern"]},
        {"quantity": "baseline", "value": selection["baseline"]},
        {"quantity": "allowed degradation", "value": selection["max_degradation"]},
        {"quantity": "confidence (family-wise)", "value": selection.get("confidence")},
        {"quantity": "lower bound of the paired difference (confirmation tasks)",
         "value": selection.get("lower_bound")},
        {"quantity": "confirmation tasks / classes",
         "value": f"{selection.get('confirmation_tasks')} / {selection.get('confirmation_classes')}"},
        {"quantity": f"test accuracy, fresh tasks ({rests_on}), 95% CI",
         "value": pm(selection.get("test_accuracy"), selection.get("test_ci95"))},
        {"quantity": "baseline test accuracy, same tasks",
         "value": pm(selection.get("baseline_test_accuracy"), selection.get("baseline_test_ci95"))},
        {"quantity": "paired difference, same tasks",
         "value": pm(selection.get("difference"), selection.get("difference_ci95"))},
        {"quantity": "speedup (latency ms vs baseline ms)",
         "value": None if selection.get("speedup") is None else
         f"{selection['speedup']:.1f}x ({selection['latency_ms']:.2f} vs {selection['baseline_latency_ms']:.2f})"},
    ]
    verdict = "confirmed" if selection.get("confirmed") else "not confirmed"
    candidates = selection.get("candidates") or []
    table = _html_table(list(candidates), ["pattern", "val_difference", "val_speedup", "test_difference",
                                           "lower_bound", "confirmed"]) if candidates else ""
    return (f"<p><b>{html.escape(selection['pattern'])}</b> ({verdict}): {html.escape(selection.get('reason', ''))}"
            f"</p>{_html_table(rows, ['quantity', 'value'])}<h3>Candidates, fastest first</h3>{table}")


def _html(data: dict[str, Any], png: bytes) -> str:
    config_rows = [{"setting": k, "value": v} for k, v in data["config"].items()]
    importance_rows = [
        {"group": g, "accuracy": data["importance"]["accuracy"].get(g), "time": data["importance"]["time"].get(g)}
        for g in sorted(set(data["importance"]["accuracy"]) | set(data["importance"]["time"]))
    ]
    selection = data.get("selection")
    selection_html = _selection_html(selection) if selection else "<p>Run <code>patternsearch " \
        "select</code> to confirm a pattern on the test split.</p>"
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>patternsearch report: {html.escape(data["study"])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}
td:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Study {html.escape(data["study"])}</h1>
<p>{data["complete"]} complete trials and {data["stopped_early"]} stopped early because a faster trial was surely
more accurate (target {data["target"]}; tables below use complete trials). Fastest Pareto pattern within
{data["choice"]["max_degradation"]:g} of the baseline: <b>{html.escape(data["choice"]["selected"]["pattern"])}</b>
({data["choice"]["selected"]["speedup"]:.1f}x).</p>
<img alt="Pareto front" src="data:image/png;base64,{image}">
<h2>Selection confirmed on the test split</h2>{selection_html}
<h2>Pareto front</h2>{_html_table(data["pareto"], ["pattern", "accuracy", "ci95", "latency_ms", "speedup", "flops"])}
<h2>Best pattern per step count</h2>
{_html_table(data["per_step"], ["steps", "best_pattern", "best_accuracy", "best_speedup", "full_accuracy",
                                "full_ci95"])}
<h2>Layer-group importance (fANOVA)</h2>{_html_table(importance_rows, ["group", "accuracy", "time"])}
<h2>Configuration</h2>{_html_table(config_rows, ["setting", "value"])}
</body></html>
"""


def build_report(
    study: optuna.Study,
    out_dir: str | os.PathLike[str],
    *,
    max_degradation: float = 0.01,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> tuple[ReportFiles, dict[str, Any]]:
    """Writes ``pareto.png``, ``report.html`` and ``report.json`` for a study.

    Args:
        study: A study made by ``optimize``.
        out_dir: Folder for the three files (created).
        max_degradation: Accuracy budget of the highlighted selection.
        data_root: Data folder, to score full MAML at step counts the study lacks.
        checkpoint: The study's checkpoint, for the same purpose.
        device: Where that scoring runs.

    Returns:
        The paths and the report's numbers (the content of ``report.json``).
    """
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    choice = _confirmed_choice(study, choose(study, max_degradation), max_degradation)
    choice_rows = {
        "max_degradation": max_degradation, "threshold": choice.threshold,
        "baseline": _row(choice.baseline), "selected": _row(choice.selected),
    }
    try:
        full = full_by_steps(study, config, data_root=data_root, checkpoint=checkpoint, device=device)
    except PatternsearchError as error:
        warnings.warn(f"full MAML per step count not scored ({error})", stacklevel=2)
        full = {}
    data: dict[str, Any] = {
        "study": study.study_name,
        "complete": len(completed_trials(study)),
        "stopped_early": len(stopped_early_trials(study)),
        "target": study.user_attrs.get(TARGET_ATTR),
        "config": config.as_dict(),
        "choice": choice_rows,
        "selection": study.user_attrs.get(SELECTION_ATTR),
        "pareto": [_row(t) for t in pareto_trials(study)],
        "per_step": per_step_table(study, full),
        "importance": importances(study, config),
        "trials": [_row(t) for t in completed_trials(study)],
    }
    window = _accuracy_window(choice, [float(measured(t).accuracy) for t in completed_trials(study)],
                              max_degradation)
    shown = [t for t in completed_trials(study) + stopped_early_trials(study)
             if float(measured(t).accuracy) >= window[0]]
    data["plot"] = {"x": "speedup", "accuracy_window": list(window),
                    "trials_below_window": data["complete"] + data["stopped_early"] - len(shown)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "pareto.png", out / "report.html", out / "report.json")
    _plot(study, choice, max_degradation, window, files.png)
    atomic_write_bytes(files.html, _html(data, files.png.read_bytes()).encode("utf-8"))
    atomic_write_bytes(files.json, json.dumps(data, indent=2).encode("utf-8"))
    return files, data
