"""``patternsearch report``: the answer of a study, its Pareto plot, per-step table and layer-group importance.

The report's headline is ``select``'s answer, read from the study (the
pattern confirmed on held-out test tasks, its bound and its speedup timed at
select time). Everything else comes from the study's validation tasks and
is labelled as such: a validation accuracy or an *estimated* speedup is what
the search saw, not what was confirmed. The report reads the study and never
writes to it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from adjustText import adjust_text
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from optuna.trial import FrozenTrial

from .benchmarks._archives import atomic_write_bytes
from .errors import PatternsearchError, RecordError
from .measurement import CachedScorer, timing_noise
from .pattern import Pattern
from .search import (
    CONFIG_ATTR,
    SELECTION_ATTR,
    TARGET_ATTR,
    Choice,
    Selection,
    StudyConfig,
    choose,
    completed_trials,
    measured,
    pareto_trials,
    stopped_early_trials,
    study_experiment,
)
from .tuning import TuneResult
from .uncertainty import TaskDesign, estimate, support

DEFAULT_MAX_DEGRADATION = 0.01


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the written report."""

    png: Path
    html: Path
    json: Path


def _row(trial: FrozenTrial) -> dict[str, Any]:
    record = measured(trial)
    return {
        "trial": trial.number, "pattern": record.pattern, "val_accuracy": record.accuracy, "val_ci95": record.ci95,
        "latency_ms": record.latency_ms, "val_speedup": record.speedup, "flops": record.flops,
    }


def _unique(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if "repeat_of" not in t.user_attrs]


def full_by_steps(study: optuna.Study, config: StudyConfig, *, data_root: str | os.PathLike[str] | None,
                  checkpoint: str | os.PathLike[str] | None, device: str) -> dict[int, dict[str, float]]:
    """Accuracy of full MAML at every step count on the study's validation tasks.

    Patterns the study evaluated are read from it; the others are scored on
    the same tasks (the study itself is never written).

    Raises:
        PatternsearchError: When a step count is missing and the data or the
            checkpoint cannot be loaded.
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
    """For each step count, the most accurate pattern next to full MAML at that step count (validation)."""
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
            "best_val_accuracy": measured(trial).accuracy if trial else None,
            "best_val_speedup": measured(trial).speedup if trial else None,
            "full_val_accuracy": full.get(steps, {}).get("accuracy"),
            "full_val_ci95": full.get(steps, {}).get("ci95"),
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


def headline(selection: Selection | None, choice: Choice) -> dict[str, Any]:
    """The report's answer: ``select``'s stored selection, or a labelled validation estimate when select has not run.

    Args:
        selection: What ``select`` stored in the study, or None.
        choice: The validation choice at the report's budget (used only when select has not run).

    Returns:
        ``pattern``, ``source`` (``select``, ``select --no-confirm`` or
        ``validation``), ``confirmed``, ``speedup`` (select's held-out timing,
        else None) and ``text``, one sentence for the page and the terminal.
    """
    if selection is None:
        fastest = measured(choice.selected)
        return {"pattern": fastest.pattern, "source": "validation", "confirmed": False, "speedup": None,
                "text": "select has not been run on this study, so no pattern is confirmed yet: run 'patternsearch "
                        "select' with the same --storage and --study (it tests the candidates on held-out test "
                        "tasks and times them). Validation estimate until then: "
                        f"{fastest.pattern}, estimated speedup {fastest.speedup:.1f}x (validation)."}
    pattern = selection.pattern
    if selection.test_accuracy is None:
        return {"pattern": pattern, "source": "select --no-confirm", "confirmed": False, "speedup": None,
                "text": f"select ran with --no-confirm: {pattern} is a validation estimate, not confirmed "
                        f"(estimated speedup {selection.val_speedup or 1.0:.1f}x, validation); run "
                        "'patternsearch select' without --no-confirm to test it on held-out test tasks."}
    budget = f"{selection.max_degradation:g} of {selection.baseline}"
    if selection.confirmed:
        text = (f"Selected: {pattern}, confirmed within {budget} at {selection.confidence:g} confidence "
                f"(lower bound of the paired accuracy difference {selection.lower_bound:+.4f}); "
                f"speedup {selection.speedup:.1f}x (held-out timing, {selection.device})")
        if selection.adapt_predict_speedup is not None:
            text += f"; adapt + predict {selection.adapt_predict_speedup:.1f}x"
        text += "."
    else:
        text = (f"Selected: {pattern}, the baseline: no faster pattern was confirmed within {budget} at "
                f"{selection.confidence:g} confidence ({selection.reason}).")
    return {"pattern": pattern, "source": "select", "confirmed": selection.confirmed, "speedup": selection.speedup,
            "text": text}


def stored_selection(study: optuna.Study) -> tuple[Selection | None, str | None]:
    """What ``select`` stored in the study, and a note when it cannot be read (another version's record)."""
    stored = study.user_attrs.get(SELECTION_ATTR)
    if stored is None:
        return None, None
    try:
        return Selection.from_dict(stored, what=f"the selection stored in study {study.study_name!r}",
                                   remedy="run 'patternsearch select' again to store a new one"), None
    except RecordError as error:
        return None, str(error)


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


def _accuracy_window(choice: Choice, accuracies: list[float], max_degradation: float) -> tuple[float, float]:
    """The accuracy range where the decision happens: a margin below the threshold up to the best trial."""
    margin = max(max_degradation, 0.005)
    top = max(accuracies + [float(measured(choice.baseline).accuracy)])
    low = min(choice.threshold, float(measured(choice.selected).accuracy)) - 1.5 * margin
    return low, top + 0.6 * margin  # room for the labels above the best trial


def _adapts(trial: FrozenTrial) -> bool:
    """False for ``none`` (no adaptation), whose speedup would stretch the axis."""
    return not Pattern.parse(measured(trial).pattern).is_none


def _plot(study: optuna.Study, choice: Choice, selected: str | None, max_degradation: float,
          window: tuple[float, float], path: Path) -> None:
    trials = [t for t in completed_trials(study) if _adapts(t)]
    stopped = [t for t in stopped_early_trials(study) if _adapts(t)]
    x, label = _speedup_axis(study, choice.baseline)
    front = sorted((t for t in pareto_trials(study) if _adapts(t)), key=x)
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


# Column key -> (header, kind); kind picks the cell format.
_COLUMNS: dict[str, tuple[str, str]] = {
    "pattern": ("pattern", "text"),
    "val_accuracy": ("accuracy (validation)", "score"),
    "val_ci95": ("± 95% CI", "score"),
    "latency_ms": ("adaptation time, ms (study)", "ms"),
    "val_speedup": ("estimated speedup (validation)", "speedup"),
    "flops": ("FLOPs per adaptation", "flops"),
    "steps": ("inner steps", "text"),
    "best_pattern": ("most accurate pattern", "text"),
    "best_val_accuracy": ("its accuracy (validation)", "score"),
    "best_val_speedup": ("its estimated speedup (validation)", "speedup"),
    "full_val_accuracy": ("full MAML at these steps (validation)", "score"),
    "full_val_ci95": ("± 95% CI", "score"),
    "group": ("parameter", "text"),
    "accuracy": ("importance for accuracy", "share"),
    "time": ("importance for time", "share"),
    "setting": ("setting", "text"),
    "value": ("value", "text"),
    "quantity": ("quantity", "text"),
    "level": ("test level", "number"),
    "val_difference": ("difference (validation)", "difference"),
    "val_corrected": ("corrected difference (validation)", "difference"),
    "val_lower_bound": ("lower bound (validation)", "difference"),
    "test_difference": ("difference (confirmation tasks)", "difference"),
    "lower_bound": ("lower bound (confirmation tasks)", "difference"),
    "confirmed": ("confirmed", "yes/no"),
    "checkpoint": ("checkpoint", "text"),
    "speedup": ("estimated speedup (validation)", "speedup"),
    "before": ("difference before specialization (validation)", "difference"),
    "after": ("difference after specialization (validation)", "difference"),
    "meta_updates": ("meta-updates of specialization", "number"),
}


def _cell(value: Any, kind: str, percent: bool) -> str:
    """One table cell: scores as percentages (accuracy) or 4 decimals, speedups with x, ms with 2 decimals."""
    if value is None:
        return "-"
    if kind == "yes/no" or isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)) or kind == "text":
        return html.escape(str(value))
    formats: dict[str, Callable[[float], str]] = {
        "score": (lambda v: f"{100 * v:.2f}%") if percent else (lambda v: f"{v:.4f}"),
        "difference": (lambda v: f"{100 * v:+.2f} pts") if percent else (lambda v: f"{v:+.4f}"),
        "speedup": lambda v: f"{v:.1f}x",
        "ms": lambda v: f"{v:.2f}",
        "flops": lambda v: f"{v / 1e6:,.1f} M",
        "share": lambda v: f"{100 * v:.0f}%",
        "number": lambda v: f"{v:.4g}",
    }
    return formats[kind](float(value))


def _html_table(rows: list[dict[str, Any]], columns: list[str], percent: bool) -> str:
    head = "".join(f"<th>{html.escape(_COLUMNS[c][0])}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c), _COLUMNS[c][1], percent)}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _selection_html(selection: dict[str, Any], percent: bool) -> str:
    """The decision's numbers as rows, and every candidate's test."""
    def pm(mean: float | None, half: float | None, kind: str = "score") -> str | None:
        if mean is None:
            return None
        return f"{_cell(mean, kind, percent)} ± {_cell(half or 0.0, 'score', percent).lstrip('+')}"

    rests_on = support(selection.get("test_tasks") or 0, selection.get("test_classes"), selection.get("test_units"))
    speed = selection.get("speedup")
    rows = [
        {"quantity": "selected pattern", "value": selection["pattern"]},
        {"quantity": "confirmed", "value": "yes" if selection.get("confirmed") else "no"},
        {"quantity": "baseline", "value": selection["baseline"]},
        {"quantity": "allowed degradation", "value": f"{100 * selection['max_degradation']:g} points" if percent
         else f"{selection['max_degradation']:g}"},
        {"quantity": "confidence (family-wise)", "value": selection.get("confidence")},
        {"quantity": "lower bound of the paired difference (confirmation tasks)",
         "value": _cell(selection.get("lower_bound"), "difference", percent)},
        {"quantity": "confirmation tasks / classes",
         "value": f"{selection.get('confirmation_tasks')} / {selection.get('confirmation_classes')}"},
        {"quantity": f"test accuracy, fresh tasks ({rests_on}), 95% CI",
         "value": pm(selection.get("test_accuracy"), selection.get("test_ci95"))},
        {"quantity": "baseline test accuracy, same tasks",
         "value": pm(selection.get("baseline_test_accuracy"), selection.get("baseline_test_ci95"))},
        {"quantity": "paired difference, same tasks",
         "value": pm(selection.get("difference"), selection.get("difference_ci95"), "difference")},
        {"quantity": "speedup: adaptation time, held-out timing (what the search optimises)",
         "value": None if speed is None else
         f"{speed:.1f}x ({selection['latency_ms']:.2f} vs {selection['baseline_latency_ms']:.2f} ms)"},
        {"quantity": "estimated speedup (validation, the study's timing)",
         "value": _cell(selection.get("val_speedup"), "speedup", percent)},
    ]
    if selection.get("adapt_predict_speedup") is not None:
        rows.append({"quantity": f"adapt + predict {selection.get('query_batch', '')} queries, held-out timing",
                     "value": f"{selection['adapt_predict_speedup']:.1f}x ({selection['adapt_predict_ms']:.2f} vs "
                              f"{selection['baseline_adapt_predict_ms']:.2f} ms)"})
    candidates = list(selection.get("candidates") or [])
    columns = [c for c in ("pattern", "level", "val_difference", "val_corrected", "val_lower_bound", "val_speedup",
                           "test_difference", "lower_bound", "confirmed") if any(c in row for row in candidates)]
    table = f"<h3>Candidates, fastest first</h3>{_html_table(candidates, columns, percent)}" if candidates else ""
    return (f"<p>{html.escape(selection.get('reason', ''))}</p>"
            f"{_html_table(rows, ['quantity', 'value'], percent)}{table}")


def _tune_html(tuned: dict[str, Any] | None, percent: bool) -> str:
    """``tune``'s answer and the fronts before and after specialization (nothing when it has not run)."""
    if not tuned:
        return ""
    fronts = [{**row, "checkpoint": "parent" if row["after"] is None else Path(row["checkpoint"]).name}
              for row in tuned["fronts"]]
    study = html.escape(tuned["tuning_study"])
    return (f"<h2>Tuned (tune: specialized checkpoints, held-out test tasks; study {study})</h2>"
            f"{_selection_html(tuned['selection'], percent)}<h3>Fronts before and after specialization "
            "(validation difference to full MAML on the parent)</h3>"
            + _html_table(fronts, ["pattern", "checkpoint", "speedup", "before", "after", "meta_updates",
                                   "lower_bound", "confirmed"], percent))


def _html(data: dict[str, Any], png: bytes) -> str:
    scores = [row["val_accuracy"] for row in data["trials"]]
    percent = 0.0 <= min(scores) and 0.0 < max(scores) <= 1.0  # accuracies, not e.g. a negative MSE
    config_rows = [{"setting": k, "value": v} for k, v in data["config"].items()]
    importance_rows = [
        {"group": g, "accuracy": data["importance"]["accuracy"].get(g), "time": data["importance"]["time"].get(g)}
        for g in sorted(set(data["importance"]["accuracy"]) | set(data["importance"]["time"]))
    ]
    selection = data.get("selection")
    selection_html = _selection_html(selection, percent) if selection else "<p>Not run yet.</p>"
    warning = "".join(f'<p class="warn">{html.escape(note)}</p>' for note in data["notes"])
    image = base64.b64encode(png).decode("ascii")
    trials = (f"{data['complete']} complete trials and {data['stopped_early']} stopped early because a faster trial "
              f"was surely more accurate (target {data['target']}; the tables use complete trials).")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>patternsearch report: {html.escape(data["study"])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}
td:first-child{{text-align:left}}img{{max-width:100%}}.answer{{font-size:1.15em;padding:.6em;background:#eef6ee}}
.warn{{padding:.6em;background:#fff3cd}}</style></head><body>
<h1>Study {html.escape(data["study"])}</h1>
<p class="answer" id="headline">{html.escape(data["headline"]["text"])}</p>{warning}
<p>Speedup means full MAML's median adaptation time divided by the pattern's (paired samples). The selection's
speedup is timed by <code>select</code> on held-out tasks; every other speedup on this page is the study's
estimate on validation tasks, and every accuracy below the selection is a validation accuracy. {trials}</p>
<img alt="Pareto front: validation accuracy against estimated speedup" src="data:image/png;base64,{image}">
<h2>Selection (select, held-out test tasks)</h2>{selection_html}{_tune_html(data.get("tune"), percent)}
<h2>Pareto front (validation)</h2>
{_html_table(data["pareto"], ["pattern", "val_accuracy", "val_ci95", "latency_ms", "val_speedup", "flops"], percent)}
<h2>Best pattern per step count (validation)</h2>
{_html_table(data["per_step"], ["steps", "best_pattern", "best_val_accuracy", "best_val_speedup",
                                "full_val_accuracy", "full_val_ci95"], percent)}
<h2>Layer-group importance (fANOVA)</h2>{_html_table(importance_rows, ["group", "accuracy", "time"], percent)}
<h2>Configuration</h2>{_html_table(config_rows, ["setting", "value"], percent)}
</body></html>
"""


def build_report(
    study: optuna.Study,
    out_dir: str | os.PathLike[str],
    *,
    max_degradation: float | None = None,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tuned: TuneResult | None = None,
) -> tuple[ReportFiles, dict[str, Any]]:
    """Writes ``pareto.png``, ``report.html`` and ``report.json`` for a study.

    Args:
        study: A study made by ``optimize``.
        out_dir: Folder for the three files (created).
        max_degradation: Accuracy budget of the plot's threshold and of the
            validation estimate (default: the budget ``select`` ran with, else 0.01).
        data_root: Data folder, to score full MAML at step counts the study lacks.
        checkpoint: The study's checkpoint, for the same purpose.
        device: Where that scoring runs.
        tuned: ``tune``'s answer on this study, if it ran (a section of its own).

    Returns:
        The paths and the report's numbers (the content of ``report.json``):
        ``headline`` (see :func:`headline`), ``notes`` (warnings: noisy
        timing, tables left incomplete), ``selection`` (what select stored),
        ``validation_choice``, ``pareto``, ``per_step``, ``importance``,
        ``trials``, ``config``, ``plot`` and ``tune`` (None, or ``tune``'s
        selection and the fronts before and after specialization).
    """
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    selection, unreadable = stored_selection(study)
    if max_degradation is None:
        max_degradation = selection.max_degradation if selection else DEFAULT_MAX_DEGRADATION
    choice = choose(study, max_degradation)
    notes = [] if unreadable is None else [unreadable]
    noise = timing_noise([measured(t).baseline_latency_ms for t in completed_trials(study)],
                         where="between the study's trials")
    if noise:
        notes.append(noise)
    if selection and selection.timing_noise:
        notes.append(f"select's timing: {selection.timing_noise}")
    try:
        full = full_by_steps(study, config, data_root=data_root, checkpoint=checkpoint, device=device)
    except PatternsearchError as error:
        notes.append(f"full MAML at the step counts the study did not try is not scored ({error}); pass --data-root "
                     "and --checkpoint to fill that column")
        full = {}
    data: dict[str, Any] = {
        "study": study.study_name,
        "headline": headline(selection, choice),
        "notes": notes,
        "complete": len(completed_trials(study)),
        "stopped_early": len(stopped_early_trials(study)),
        "target": study.user_attrs.get(TARGET_ATTR),
        "config": config.as_dict(),
        "selection": None if selection is None else selection.as_dict(),
        "validation_choice": {"max_degradation": max_degradation, "threshold": choice.threshold,
                              "baseline": _row(choice.baseline), "fastest": _row(choice.selected)},
        "pareto": [_row(t) for t in pareto_trials(study)],
        "per_step": per_step_table(study, full),
        "importance": importances(study, config),
        "trials": [_row(t) for t in completed_trials(study)],
        "tune": None if tuned is None else {"tuning_study": tuned.tuning_study, "selection": tuned.selection.as_dict(),
                                            "fronts": [asdict(row) for row in tuned.fronts()]},
    }
    window = _accuracy_window(choice, [float(measured(t).accuracy) for t in completed_trials(study)],
                              max_degradation)
    shown = [t for t in completed_trials(study) + stopped_early_trials(study)
             if float(measured(t).accuracy) >= window[0] and _adapts(t)]
    data["plot"] = {"x": "estimated speedup (validation)", "accuracy_window": list(window),
                    "trials_not_shown": data["complete"] + data["stopped_early"] - len(shown)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "pareto.png", out / "report.html", out / "report.json")
    _plot(study, choice, selection.pattern if selection else None, max_degradation, window, files.png)
    atomic_write_bytes(files.html, _html(data, files.png.read_bytes()).encode("utf-8"))
    atomic_write_bytes(files.json, json.dumps(data, indent=2).encode("utf-8"))
    return files, data
