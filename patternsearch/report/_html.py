"""The report's self-contained HTML page, rendered from the content of ``report.json``."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..search import Selection
from ..tuning import TuneResult
from ..uncertainty import support

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


def _selection_html(selection: Selection, percent: bool) -> str:
    """The decision's numbers as rows, and every candidate's test."""
    def pm(mean: float | None, half: float | None, kind: str = "score") -> str | None:
        if mean is None:
            return None
        return f"{_cell(mean, kind, percent)} ± {_cell(half or 0.0, 'score', percent).lstrip('+')}"

    confirmation, fresh, timing = selection.confirmation, selection.fresh, selection.timing
    rows = [
        {"quantity": "selected pattern", "value": selection.pattern},
        {"quantity": "confirmed", "value": "yes" if selection.confirmed else "no"},
        {"quantity": "baseline", "value": selection.baseline},
        {"quantity": "allowed degradation", "value": f"{100 * selection.max_degradation:g} points" if percent
         else f"{selection.max_degradation:g}"},
        {"quantity": "confidence (family-wise)", "value": selection.confidence},
    ]
    if confirmation is not None:
        rows += [{"quantity": "lower bound of the paired difference (confirmation tasks)",
                  "value": _cell(confirmation.lower_bound, "difference", percent)},
                 {"quantity": "confirmation tasks / classes",
                  "value": f"{confirmation.tasks} / {confirmation.classes}"}]
    if fresh is not None:
        rows += [{"quantity": f"test accuracy, fresh tasks ({support(fresh.tasks, fresh.classes, fresh.units)}), "
                              "95% CI", "value": pm(fresh.accuracy, fresh.ci95)},
                 {"quantity": "baseline test accuracy, same tasks",
                  "value": pm(fresh.baseline_accuracy, fresh.baseline_ci95)},
                 {"quantity": "paired difference, same tasks",
                  "value": pm(fresh.difference, fresh.difference_ci95, "difference")}]
    if timing is not None:
        rows += [{"quantity": "speedup: adaptation time, held-out timing (what the search optimises)",
                  "value": f"{timing.speedup:.1f}x ({timing.latency_ms:.2f} vs {timing.baseline_latency_ms:.2f} ms)"},
                 {"quantity": f"adapt + predict {timing.query_batch} queries, held-out timing",
                  "value": f"{timing.adapt_predict_speedup:.1f}x ({timing.adapt_predict_ms:.2f} vs "
                           f"{timing.baseline_adapt_predict_ms:.2f} ms)"}]
    rows.append({"quantity": "estimated speedup (validation, the study's timing)",
                 "value": _cell(selection.validation.speedup, "speedup", percent)})
    candidates = [] if confirmation is None else [asdict(c) for c in confirmation.candidates]
    columns = [c for c in ("pattern", "level", "val_difference", "val_corrected", "val_lower_bound", "val_speedup",
                           "test_difference", "lower_bound", "confirmed") if any(c in row for row in candidates)]
    table = f"<h3>Candidates, fastest first</h3>{_html_table(candidates, columns, percent)}" if candidates else ""
    return (f"<p>{html.escape(selection.reason)}</p>"
            f"{_html_table(rows, ['quantity', 'value'], percent)}{table}")


def _tune_html(tuned: TuneResult | None, percent: bool) -> str:
    """``tune``'s answer and the fronts before and after specialization (nothing when it has not run)."""
    if tuned is None:
        return ""
    fronts = [{**asdict(row), "checkpoint": "parent" if row.after is None else Path(row.checkpoint).name}
              for row in tuned.fronts()]
    study = html.escape(tuned.tuning_study)
    return (f"<h2>Tuned (tune: specialized checkpoints, held-out test tasks; study {study})</h2>"
            f"{_selection_html(tuned.selection, percent)}<h3>Fronts before and after specialization "
            "(validation difference to full MAML on the parent)</h3>"
            + _html_table(fronts, ["pattern", "checkpoint", "speedup", "before", "after", "meta_updates",
                                   "lower_bound", "confirmed"], percent))


def render_html(data: dict[str, Any], png: bytes, selection: Selection | None, tuned: TuneResult | None) -> str:
    """The self-contained page of ``report.json``'s content, the plot inlined, select's and tune's answers."""
    scores = [row["val_accuracy"] for row in data["trials"]]
    percent = 0.0 <= min(scores) and 0.0 < max(scores) <= 1.0  # accuracies, not e.g. a negative MSE
    config_rows = [{"setting": k, "value": v} for k, v in data["config"].items()]
    importance_rows = [
        {"group": g, "accuracy": data["importance"]["accuracy"].get(g), "time": data["importance"]["time"].get(g)}
        for g in sorted(set(data["importance"]["accuracy"]) | set(data["importance"]["time"]))
    ]
    selection_html = "<p>Not run yet.</p>" if selection is None else _selection_html(selection, percent)
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
<h2>Selection (select, held-out test tasks)</h2>{selection_html}{_tune_html(tuned, percent)}
<h2>Pareto front (validation)</h2>
{_html_table(data["pareto"], ["pattern", "val_accuracy", "val_ci95", "latency_ms", "val_speedup", "flops"], percent)}
<h2>Best pattern per step count (validation)</h2>
{_html_table(data["per_step"], ["steps", "best_pattern", "best_val_accuracy", "best_val_speedup",
                                "full_val_accuracy", "full_val_ci95"], percent)}
<h2>Layer-group importance (fANOVA)</h2>{_html_table(importance_rows, ["group", "accuracy", "time"], percent)}
<h2>Configuration</h2>{_html_table(config_rows, ["setting", "value"], percent)}
</body></html>
"""
