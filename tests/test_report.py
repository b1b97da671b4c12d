from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState
from PIL import Image

from patternsearch.search import optimize, pareto_trials, select

from .conftest import SINUSOID


def test_report_files_match_the_study(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    from patternsearch.report import build_report

    storage = f"sqlite:///{tmp_path}/s.db"
    study = optimize(10, SINUSOID.but(checkpoint=sinusoid_checkpoint), tasks=8, latency_tasks=1, repeats=1,
                     max_steps=4, baseline="111:4", storage=storage, progress=False)
    # Before select: the headline says select has not run and labels the validation pick as an estimate.
    before = build_report(study, tmp_path / "before", max_degradation=0.5, checkpoint=sinusoid_checkpoint,
                          device="cpu").content
    assert before["headline"]["source"] == "validation" and before["headline"]["speedup"] is None
    assert "select has not been run" in before["headline"]["text"] and "(validation)" in before["headline"]["text"]
    assert before["headline"]["pattern"] == before["validation_choice"]["fastest"]["pattern"]

    out = tmp_path / "report"
    selection = select(0.5, storage=storage, test_tasks=6, checkpoint=sinusoid_checkpoint, device="cpu")
    result = subprocess.run([sys.executable, "-m", "patternsearch", "report", "--storage", storage, "--out", str(out),
                             "--checkpoint", str(sinusoid_checkpoint), "--device", "cpu"],
                            capture_output=True, text=True, env=os.environ, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("pareto.png", "report.html", "report.json"):
        assert f"wrote {out / name}" in result.stdout
    assert "best pattern per step count" in result.stdout
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr

    with Image.open(out / "pareto.png") as image:
        image.load()
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400

    page = (out / "report.html").read_text()
    assert base64.b64encode((out / "pareto.png").read_bytes()).decode() in page
    study = optuna.load_study(study_name="sinusoid-mlp-5w5s", storage=storage)
    front = pareto_trials(study)
    assert "<h2>Pareto front (validation)</h2>" in page
    for trial in front:
        assert f"<td>{trial.user_attrs['pattern']}</td>" in page
    # Tables read as numbers with units and words, not raw floats and snake_case.
    assert "<th>estimated speedup (validation)</th>" in page and "val_speedup" not in page
    assert re.search(r"<td>-?\d+\.\d{5,}</td>", page) is None

    data = json.loads((out / "report.json").read_text())
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert data["complete"] == len(complete) == 10 and data["target"] == 10
    assert [r["pattern"] for r in data["pareto"]] == [t.user_attrs["pattern"] for t in front]
    assert [r["val_accuracy"] for r in data["trials"]] == [t.user_attrs["accuracy"] for t in complete]
    assert data["config"]["baseline"] == "111:4"
    steps = [row["steps"] for row in data["per_step"]]
    assert steps == [1, 2, 3, 4]
    assert all(row["full_val_accuracy"] is not None for row in data["per_step"])
    assert set(data["importance"]["accuracy"]) <= {"fc1", "fc2", "head", "steps"}

    # The headline is select's answer, with its bound and its held-out speedup.
    assert data["headline"]["pattern"] == selection.pattern and data["headline"]["source"] == "select"
    assert data["headline"]["speedup"] == selection.timing.speedup
    assert html.escape(data["headline"]["text"]) in page and data["headline"]["text"] in result.stdout
    # The selection reads as rows (it fits the page), with every candidate and the fresh-task accuracies.
    assert "<td>selected pattern</td><td>" + selection.pattern + "</td>" in page
    assert "lower bound of the paired difference" in page and "Candidates, fastest first" in page
    for candidate in selection.confirmation.candidates:
        assert f"<td>{candidate.pattern}</td>" in page
    assert data["selection"]["pattern"] == selection.pattern
    # The plot's accuracy axis covers the decision: the threshold and the selected pattern, not the far tail.
    low, high = data["plot"]["accuracy_window"]
    threshold = data["validation_choice"]["threshold"]
    assert data["validation_choice"]["max_degradation"] == 0.5  # select's budget, when --max-degradation is not given
    assert low < threshold < high and low <= data["validation_choice"]["fastest"]["val_accuracy"] <= high
    below = sum(t.user_attrs["accuracy"] < low or t.user_attrs["pattern"] == "000:0" for t in complete)
    assert data["plot"]["trials_not_shown"] >= below


def test_report_of_a_phases_study_reads_phased_patterns(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    from patternsearch.report import build_report

    storage = f"sqlite:///{tmp_path}/s.db"
    study = optimize(12, SINUSOID.but(checkpoint=sinusoid_checkpoint), tasks=8, latency_tasks=1, repeats=1,
                     max_steps=4, baseline="111:4", space="phases", search_lr=True, storage=storage, progress=False)
    data = build_report(study, tmp_path / "report", max_degradation=0.5, checkpoint=sinusoid_checkpoint,
                        device="cpu").content
    assert data["config"]["space"] == "phases" and data["config"]["search_lr"] is True
    assert [row["steps"] for row in data["per_step"]] == [1, 2, 3, 4]  # total steps over the phases
    assert data["per_step"][3]["full_val_accuracy"] is not None
    labels = {"fc1", "fc2", "head", "steps", "lr scale", "phases"}
    assert set(data["importance"]["accuracy"]) <= labels | {f"{name} (phase {k})" for name in labels for k in (1, 2)}
