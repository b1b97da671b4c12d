"""``tune`` at tiny settings: the schedule, resuming at every stage, bad input, the error rate when specialized."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from patternsearch import cli
from patternsearch.confirmation import CandidateTest, confirm_in_sequence, power_graph
from patternsearch.errors import UsageError
from patternsearch.measurement import LatencyStats
from patternsearch.search import optimize
from patternsearch.tuning import (
    Plan,
    PlannedCandidate,
    TuneConfig,
    TuneResult,
    checkpoint_name,
    expected_speedup,
    load_result,
    parse_duration,
    rung_sizes,
    survivors,
    tune,
)
from patternsearch.tuning._schedule import RungScore
from patternsearch.uncertainty import TaskDesign

from .conftest import SINUSOID

TINY_STUDY = dict(tasks=12, latency_tasks=1, repeats=1, progress=False, heartbeat_interval=2)
TINY_TUNE = dict(budget_s=1.2, candidates=2, margin=5.0, val_tasks=8, test_tasks=10, report_tasks=8,
                 heartbeat_interval=2, progress=False, log=lambda _: None)
D = 1.0  # sinusoid scores are negative mean squared errors


def test_durations_parse_and_bad_ones_are_refused() -> None:
    assert [parse_duration(t) for t in ("90s", "3m", "2h", "45", "1.5h")] == [90, 180, 7200, 45, 5400]
    for bad in ("0", "0s", "two hours", "2d", "-1m", ""):
        with pytest.raises(UsageError, match="--budget"):
            parse_duration(bad)


def test_successive_halving_keeps_the_best_expected_speedups_and_spends_equal_shares_per_rung() -> None:
    assert rung_sizes(4, 2) == [4, 2, 1] and rung_sizes(5, 2) == [5, 3, 2, 1] and rung_sizes(1, 2) == [1]
    assert rung_sizes(9, 3) == [9, 3, 1]
    # Expected speedup: a fast candidate far beyond D and a slow one surely within it lose to a fast near one.
    far = expected_speedup(20.0, -0.05, 0.005, 0.01)
    near = expected_speedup(15.0, -0.008, 0.005, 0.01)
    safe = expected_speedup(5.0, 0.0, 0.005, 0.01)
    assert near > safe > far and safe == pytest.approx(5.0 * 0.977, abs=0.01)
    standings = [RungScore(0, 20.0, far), RungScore(1, 15.0, near), RungScore(2, 5.0, safe), RungScore(3, 9.0, safe)]
    assert survivors(standings, 2) == [1, 3]  # equal scores: the faster goes on
    config = TuneConfig(search_study="s", parent_sha256="x", max_degradation=0.01, budget_s=1200.0)
    plan = Plan(tuple(PlannedCandidate(f"p{i}", 10.0, 0.0, 0.0, cost, f"p{i}.pt")
                      for i, cost in enumerate([1.0, 2.0, 1.0, 1.0])), (4, 2, 1))
    # 1200 s in 3 rungs of 400 s: 100 s each of 4, then 200 s each of 2, then 400 s for the last one.
    assert [plan.target(config, 0, r) for r in range(3)] == [100, 300, 700]
    assert [plan.target(config, 1, r) for r in range(3)] == [50, 150, 350]  # twice the cost: half the updates
    # A rung's fixed cost (its validations) comes off each share before it is spent on meta-updates.
    validated = Plan((PlannedCandidate("p", 10.0, 0.0, 0.0, 1.0, "p.pt", seconds_per_unit=40.0),), (4, 2, 1))
    assert [validated.target(config, 0, r) for r in range(3)] == [60, 220, 580]


def test_checkpoint_names_are_safe_file_names() -> None:
    assert checkpoint_name("00010:1") == "00010-1.pt"
    assert checkpoint_name("00010:2+00011:4@0.5") == "00010-2-00011-4-0.5.pt"


def test_the_error_rate_holds_when_candidates_are_specialized() -> None:
    """Fabricated scores: specialized and parent candidates, every one losing exactly D (least favourable).

    Validation decides which specialized checkpoints reach the test split
    (on its own noise) and, as in ``tune``, their initial shares of the
    error rate (:func:`power_graph`); the confirmation then sees fixed
    candidates, one pattern on two checkpoints among them. No run may
    confirm one more often than the 5% family-wise error allows.
    """
    rng = np.random.default_rng(0)
    runs, tasks, errors, confirmed_special = 1500, 120, 0, 0
    loss = 0.05
    for _ in range(runs):
        names = [("00010:1", "special-a.pt"), ("00010:1", "parent.pt"), ("00011:1", "special-b.pt"),
                 ("00010:5", "parent.pt")]
        validation = {name: rng.normal(-loss, 0.02) for name in names}  # validation estimate of each
        kept = [name for name in names if validation[name] - 1.645 * 0.02 >= -loss - 0.03]
        if not kept:
            continue
        speedups = {"00010:1": 16.0, "00011:1": 13.0, "00010:5": 8.0}
        candidates = [CandidateTest(p, None, validation[(p, c)], speedups[p], val_corrected=validation[(p, c)],
                                    val_lower_bound=validation[(p, c)] - 1.645 * 0.02, checkpoint=c) for p, c in kept]
        shared = rng.normal(0.0, 0.15, tasks)  # the baseline's per-task noise, common to every difference
        draws = {(c.pattern, c.checkpoint): -loss + shared * 0.3 + rng.normal(0.0, 0.1, tasks) for c in candidates}
        decision = confirm_in_sequence(candidates, lambda c, d=draws: d[(c.pattern, c.checkpoint)], TaskDesign.none(),
                                       max_degradation=loss, confidence=0.95,
                                       graph=power_graph(candidates, max_degradation=loss, confidence=0.95))
        if decision.selected is not None:
            errors += 1
            confirmed_special += decision.selected.checkpoint != "parent.pt"
    rate = errors / runs
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs), rate
    assert errors > 0  # the simulation is near the boundary, not trivially safe


@pytest.fixture
def pattern_study(sinusoid_checkpoint: Path, tmp_path: Path) -> tuple[str, Path]:
    """A small sinusoid pattern study in its own SQLite file."""
    storage = f"sqlite:///{tmp_path}/study.db"
    optimize(12, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=storage, study_name="tiny", **TINY_STUDY)
    return storage, tmp_path / "study.db"


def _fixed_times(model: Any, benchmark: Any, patterns: Any, *args: Any, **kwargs: Any) -> dict[str, LatencyStats]:
    return {str(p): LatencyStats((50.0 + 10.0 * i,)) for i, p in enumerate(patterns)}


def _fixed_costs(monkeypatch: pytest.MonkeyPatch, *, timed_speedups: bool = False) -> None:
    # Timing is not what these tests check: fixed costs make two runs plan the same meta-updates.
    monkeypatch.setattr("patternsearch.tuning._tune.meta_update_times", _fixed_times)
    monkeypatch.setattr("patternsearch.tuning._tune._sampling_seconds", lambda *args: 0.0)
    monkeypatch.setattr("patternsearch.tuning._tune._Session.unit_seconds", lambda self, pattern: 0.0)
    if not timed_speedups:
        monkeypatch.setattr("patternsearch.tuning._tune._Session.measured_speedups",
                            lambda self, patterns: {p: 20.0 - i for i, p in enumerate(dict.fromkeys(patterns))})


def _decisions(result: TuneResult) -> dict[str, Any]:
    """What a run decided, without the times it measured."""
    return {
        "plan": [(h.pattern, Path(h.checkpoint).name) for h in result.candidates],
        "rungs": [[(r.rung, r.iterations, round(r.val_difference, 6), round(r.score, 6)) for r in h.rungs]
                  for h in result.candidates],
        "selected": (result.selection.pattern, Path(result.selection.checkpoint or "").name),
        "tested": [(c["pattern"], Path(c["checkpoint"] or "").name, c["confirmed"],
                    None if c["lower_bound"] is None else round(c["lower_bound"], 6))
                   for c in result.selection.candidates],
    }


def _copy_storage(database: Path, into: Path) -> str:
    into.mkdir()
    shutil.copy(database, into / "study.db")
    return f"sqlite:///{into}/study.db"


def test_tune_specializes_and_confirms_and_an_interrupted_run_resumes_to_the_same_decisions(
        pattern_study: tuple[str, Path], sinusoid_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, database = pattern_study
    _fixed_costs(monkeypatch)
    spec = SINUSOID.but(checkpoint=str(sinusoid_checkpoint))
    straight_storage = _copy_storage(database, tmp_path / "straight")
    straight = tune(D, spec, storage=straight_storage, study_name="tiny", out=tmp_path / "straight" / "out",
                    **TINY_TUNE)
    decided = _decisions(straight)
    assert len(straight.candidates) == 2 and [len(h.rungs) for h in straight.candidates] in ([2, 1], [1, 2])
    assert all(Path(h.checkpoint).is_file() and h.curve for h in straight.candidates)
    assert straight.selection.confirmation_tasks == 10 and straight.selection.candidates
    # The parent's version of a pattern whose specialized version passed validation is not tested beside it.
    tested = [(c["pattern"], Path(c["checkpoint"]).parent == tmp_path / "straight" / "out")
              for c in straight.selection.candidates]
    specialized = {pattern for pattern, is_specialized in tested if is_specialized}
    assert specialized and not [p for p, is_specialized in tested if not is_specialized and p in specialized]
    assert len(tested) <= 4
    # A rerun of the finished tuning does nothing and answers the same.
    assert _decisions(tune(D, spec, storage=straight_storage, study_name="tiny", out=tmp_path / "straight" / "out",
                           **TINY_TUNE)) == decided

    import patternsearch.tuning._tune as module

    stages = {"plan": (module._Session, "plan"), "specialize": (module, "specialize"),
              "measure": (module._Session, "measure"), "confirm": (module._Session, "confirm")}
    for stage, (owner, name) in stages.items():
        storage = _copy_storage(database, tmp_path / stage)
        original = getattr(owner, name)
        calls = {"n": 0}

        def interrupted(*args: Any, _original: Any = original, _calls: dict[str, int] = calls,
                        _at: int = 1 if stage in ("plan", "confirm") else 2, **kwargs: Any) -> Any:
            _calls["n"] += 1
            if _calls["n"] == _at:
                raise KeyboardInterrupt
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, interrupted)
        with pytest.raises(KeyboardInterrupt):
            tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / stage / "out", **TINY_TUNE)
        monkeypatch.setattr(owner, name, original)
        resumed = tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / stage / "out", **TINY_TUNE)
        assert _decisions(resumed) == decided, stage


def test_a_changed_configuration_is_refused_with_its_differences(pattern_study: tuple[str, Path],
                                                                  sinusoid_checkpoint: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    storage, database = pattern_study
    _fixed_costs(monkeypatch)
    spec = SINUSOID.but(checkpoint=str(sinusoid_checkpoint))
    tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / "out", **TINY_TUNE)
    with pytest.raises(UsageError, match=r"budget_s: 1\.2 -> 60\.0; candidates: 2 -> 3"):
        tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / "out",
             **{**TINY_TUNE, "budget_s": 60.0, "candidates": 3})


def _tables(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        names = [row[0] for row in connection.execute("select name from sqlite_master where type='table'")]
        return {name: connection.execute(f"select count(*) from {name}").fetchone()[0] for name in names}


@pytest.mark.parametrize("case", ["budget 0", "unknown study", "checkpoint of another benchmark"])
def test_bad_input_is_one_line_and_writes_nothing(case: str, pattern_study: tuple[str, Path], tmp_path: Path,
                                                   omniglot_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage, database = pattern_study
    before = _tables(database)
    out = tmp_path / "out"
    args = ["tune", "--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--storage", storage,
            "--out", str(out), "--device", "cpu"]
    if case == "budget 0":
        args += ["--study", "tiny", "--budget", "0"]
        expected = "--budget must be positive"
    elif case == "unknown study":
        args += ["--study", "nope", "--budget", "1m"]
        expected = "no pattern study 'nope'"
    else:
        from patternsearch.checkpoint import shipped_checkpoint

        args += ["--study", "tiny", "--budget", "1m", "--checkpoint",
                 str(shipped_checkpoint("omniglot-small", "conv4", 5, 1)), "--data-root", str(omniglot_root)]
        expected = "is not the one the study was made with"
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert _tables(database) == before and not out.exists()


def test_the_tuned_answer_is_reported_with_both_fronts(pattern_study: tuple[str, Path], sinusoid_checkpoint: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    storage, _ = pattern_study
    _fixed_costs(monkeypatch, timed_speedups=True)
    args = ["tune", "--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--storage", storage,
            "--study", "tiny", "--checkpoint", str(sinusoid_checkpoint), "--max-degradation", str(D),
            "--budget", "1.2s", "--candidates", "2", "--margin", "5", "--val-tasks", "8", "--tasks", "10",
            "--report-tasks", "8", "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("selected ") and "fronts before and after specialization" in out
    assert "meta-updates" in out and " parent " in out
    # The candidates are the fastest by the speedups timed when planning, which the parent's tested ones use too.
    result = load_result(storage, "tiny")
    assert result is not None
    speedups = [h.speedup for h in result.candidates]
    assert all(math.isfinite(x) and x > 0.0 for x in speedups) and speedups == sorted(speedups, reverse=True)
    timed = optuna.load_study(study_name="tiny.tune", storage=storage).user_attrs["tune_plan"]["speedups"]
    assert all(c["val_speedup"] == pytest.approx(timed[c["pattern"]]) for c in result.selection.candidates)
    # The study's report shows tune's answer and both fronts next to select's.
    assert cli.main(["report", "--storage", storage, "--study", "tiny", "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    fronts = report["tune"]["fronts"]
    assert report["tune"]["tuning_study"] == "tiny.tune" and len(fronts) >= 2
    assert {row["after"] is None for row in fronts} == {True, False}  # specialized ones and the parent's own
    assert "Fronts before and after specialization" in (tmp_path / "report" / "report.html").read_text()



@pytest.mark.parametrize(("pattern", "baseline_is_parent", "warned"), [
    ("010:2", True, "was specialized for 011:2, not 010:2"),
    ("010:2", False, "was specialized for 011:2, not 010:2"),
    ("011:2", False, "the baseline adapts the specialized checkpoint itself"),
    ("011:2", True, None),  # its own pattern against its parent: nothing to say
])
def test_a_specialized_checkpoint_warns_when_used_with_another_pattern_or_baseline(
        pattern: str, baseline_is_parent: bool, warned: str | None, sinusoid_checkpoint: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from patternsearch.training import specialize

    special = tmp_path / "special.pt"
    specialize(sinusoid_checkpoint, "011:2", 2, special, val_every=2, val_tasks=2, device="cpu", progress=False)
    args = ["evaluate", "--checkpoint", str(special), "--pattern", pattern, "--tasks", "4", "--repeats", "1",
            "--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--device", "cpu"]
    if baseline_is_parent:
        args += ["--baseline-checkpoint", str(sinusoid_checkpoint)]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    if warned is None:
        assert "was specialized for" not in err and "the baseline adapts" not in err
    else:
        assert warned in err and str(sinusoid_checkpoint) in err


def test_two_workers_on_a_server_storage_share_the_units(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    """Two ``tune`` processes on PostgreSQL: both take units, every unit runs once, both print the same answer."""
    import json
    import os
    import subprocess
    import sys
    import uuid

    import optuna
    from optuna.trial import TrialState

    storage = "postgresql://postgres@127.0.0.1:5432/test"
    name = f"tune-{uuid.uuid4().hex[:12]}"
    optimize(12, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=storage, study_name=name, **TINY_STUDY)
    command = [sys.executable, "-m", "patternsearch", "tune", "--storage", storage, "--study", name,
               "--checkpoint", str(sinusoid_checkpoint), "--benchmark", "sinusoid", "--shots", "5", "--queries",
               "10", "--device", "cpu", "--max-degradation", str(D), "--budget", "8s", "--candidates", "3",
               "--margin", "5", "--val-tasks", "8", "--tasks", "10", "--report-tasks", "8", "--out",
               str(tmp_path / "out"), "--heartbeat-interval", "1", "--json"]
    logs = [tmp_path / f"worker{i}.err" for i in range(2)]  # files: a full pipe would stall a worker
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}) for log in logs]
    answers = []
    for worker, log in zip(workers, logs, strict=True):
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, log.read_text()[-2000:]
        answers.append(json.loads(out)["selection"])
    assert answers[0]["pattern"] == answers[1]["pattern"] and answers[0]["checkpoint"] == answers[1]["checkpoint"]
    units = [t for t in optuna.load_study(study_name=f"{name}.tune", storage=storage).get_trials(deepcopy=False)
             if "rung" in t.user_attrs and t.state == TrialState.COMPLETE]
    keys = [(t.user_attrs["rung"], t.user_attrs["slot"]) for t in units]
    assert sorted(keys) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]  # rungs of 3, 2 and 1, each once
    assert len({t.user_attrs["worker"] for t in units}) == 2


def test_the_shipped_tuned_checkpoint_is_a_specialization_of_the_shipped_one() -> None:
    from patternsearch.checkpoint import file_checksum, load_checkpoint, shipped_folder

    parent = shipped_folder() / "omniglot-small-conv4-5w1s.pt"
    tuned = load_checkpoint(shipped_folder() / "omniglot-small-conv4-5w1s-tuned.pt")
    assert tuned.parent["sha256"] == file_checksum(parent)
    assert tuned.parent["path"] == "patternsearch/checkpoints/omniglot-small-conv4-5w1s.pt"
    assert tuned.pattern is not None and tuned.mode == load_checkpoint(parent).mode
    assert (tuned.benchmark, tuned.model, tuned.ways, tuned.shots) == ("omniglot-small", "conv4", 5, 1)
    assert tuned.config["parent_sha256"] == tuned.parent["sha256"] and tuned.training["iteration"] > 0
