"""Writing a study's report: ``report.html`` (self-contained), ``pareto.png`` and ``report.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from ..benchmarks import atomic_write_bytes
from ..confirmation import check_promise
from ..errors import PatternsearchError
from ..measurement import timing_noise
from ..search import (
    CONFIG_ATTR,
    TARGET_ATTR,
    StudyConfig,
    completed_trials,
    measured,
    pareto_trials,
    resolve_study,
    stopped_early_trials,
    validation_choice,
)
from ..tables import optional, text_table
from ..tuning import TuneResult, load_result
from ._content import StepRow, TrialRow, full_by_steps, headline, importances, per_step_table, stored_selection
from ._html import render_html
from ._plot import accuracy_window, adapts, plot

DEFAULT_MAX_DEGRADATION = 0.01


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the written report."""

    png: Path
    html: Path
    json: Path


@dataclass(frozen=True)
class Report:
    """A written report (``patternsearch report``).

    Attributes:
        study: The study's name.
        files: Where the page, the plot and the JSON were written.
        headline: The answer in one sentence (select's confirmed pattern, or a labelled validation estimate).
        notes: Warnings: an unreadable stored selection, noisy timing, tables left incomplete.
        complete, stopped_early, target: The study's trials.
        pareto: The validation Pareto front.
        per_step: The most accurate pattern and full MAML at each step count (validation).
        content: What ``report.json`` holds.
    """

    study: str
    files: ReportFiles
    headline: str
    notes: tuple[str, ...]
    complete: int
    stopped_early: int
    target: int | None
    pareto: tuple[TrialRow, ...]
    per_step: tuple[StepRow, ...]
    content: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the content of ``report.json``."""
        return self.content

    def describe(self) -> str:
        """The lines ``report`` prints."""
        return "\n".join([
            f"study {self.study}: {self.complete} complete + {self.stopped_early} stopped early, target {self.target}",
            self.headline,
            "Pareto front (validation accuracy, estimated speedup from the study's timing):",
            text_table(["pattern", "accuracy (validation)", "adaptation ms", "estimated speedup"],
                       [(r.pattern, f"{r.val_accuracy:.4f}", f"{r.latency_ms:.2f}", f"{r.val_speedup:.1f}x")
                        for r in self.pareto]),
            "best pattern per step count (validation):",
            text_table(["steps", "best pattern", "accuracy", "full MAML accuracy"],
                       [(r.steps, r.best_pattern or "-", optional(r.best_val_accuracy),
                         optional(r.full_val_accuracy)) for r in self.per_step]),
            *(f"wrote {path}" for path in (self.files.html, self.files.png, self.files.json)),
        ])


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    storage: str,
    study_name: str | None = None,
    max_degradation: float | None = None,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> Report:
    """Writes the report of a stored study, with ``tune``'s answer when it ran (``patternsearch report``).

    Args:
        out_dir: Folder for the three files (created).
        storage: The study's Optuna storage URL.
        study_name: The study (default: the storage's only pattern study).
        max_degradation: Accuracy budget of the plot's threshold (default: the one select ran with, else 0.01).
        data_root: Data folder, to score full MAML at the step counts the study lacks.
        checkpoint: The study's checkpoint, for the same purpose.
        device: Where that scoring runs.

    Raises:
        UsageError: ``max_degradation`` is not a budget.
        StorageError, SelectionError: The storage or the study cannot be read.
    """
    if max_degradation is not None:
        check_promise(max_degradation)
    study = resolve_study(storage, study_name)
    return build_report(study, out_dir, max_degradation=max_degradation, data_root=data_root, checkpoint=checkpoint,
                        device=device, tuned=load_result(storage, study.study_name))


def build_report(
    study: optuna.Study,
    out_dir: str | os.PathLike[str],
    *,
    max_degradation: float | None = None,
    data_root: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tuned: TuneResult | None = None,
) -> Report:
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
        The report; its ``content`` is what ``report.json`` holds:
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
    choice = validation_choice(study, max_degradation)
    notes = [] if unreadable is None else [unreadable]
    noise = timing_noise([measured(t).baseline_latency_ms for t in completed_trials(study)],
                         where="between the study's trials")
    if noise:
        notes.append(noise)
    if selection and selection.timing and selection.timing.noise:
        notes.append(f"select's timing: {selection.timing.noise}")
    try:
        full = full_by_steps(study, config, data_root=data_root, checkpoint=checkpoint, device=device)
    except PatternsearchError as error:
        notes.append(f"full MAML at the step counts the study did not try is not scored ({error}); pass --data-root "
                     "and --checkpoint to fill that column")
        full = {}
    pareto = tuple(TrialRow.of(t) for t in pareto_trials(study))
    per_step = tuple(per_step_table(study, full))
    answer = headline(selection, choice)
    data: dict[str, Any] = {
        "study": study.study_name,
        "headline": answer,
        "notes": notes,
        "complete": len(completed_trials(study)),
        "stopped_early": len(stopped_early_trials(study)),
        "target": study.user_attrs.get(TARGET_ATTR),
        "config": config.as_dict(),
        "selection": None if selection is None else selection.to_dict(),
        "validation_choice": {"max_degradation": max_degradation, "threshold": choice.threshold,
                              "baseline": asdict(TrialRow.of(choice.baseline)),
                              "fastest": asdict(TrialRow.of(choice.selected))},
        "pareto": [asdict(row) for row in pareto],
        "per_step": [asdict(row) for row in per_step],
        "importance": importances(study, config),
        "trials": [asdict(TrialRow.of(t)) for t in completed_trials(study)],
        "tune": None if tuned is None else {"tuning_study": tuned.tuning_study, "selection": tuned.selection.to_dict(),
                                            "fronts": [asdict(row) for row in tuned.fronts()]},
    }
    window = accuracy_window(choice, [float(measured(t).accuracy) for t in completed_trials(study)],
                              max_degradation)
    shown = [t for t in completed_trials(study) + stopped_early_trials(study)
             if float(measured(t).accuracy) >= window[0] and adapts(t)]
    data["plot"] = {"x": "estimated speedup (validation)", "accuracy_window": list(window),
                    "trials_not_shown": data["complete"] + data["stopped_early"] - len(shown)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "pareto.png", out / "report.html", out / "report.json")
    plot(study, choice, selection.pattern if selection else None, max_degradation, window, files.png)
    atomic_write_bytes(files.html, render_html(data, files.png.read_bytes(), selection, tuned).encode("utf-8"))
    atomic_write_bytes(files.json, json.dumps(data, indent=2).encode("utf-8"))
    return Report(study.study_name, files, answer["text"], tuple(notes), data["complete"], data["stopped_early"],
                  data["target"], pareto, per_step, data)
