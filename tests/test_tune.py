"""``tune`` at tiny settings: the schedule, resuming at every stage, bad input, the error rate when specialized."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from patternsearch import cli
from patternsearch.checkpoint import load_checkpoint
from patternsearch.confirmation import CandidateTest
from patternsearch.errors import UsageError
from patternsearch.looks import Ledger, Look
from patternsearch.measurement import LatencyStats
from patternsearch.search import confirm_look, optimize
from patternsearch.tuning import (
    Plan,
    PlannedCandidate,
    TuneConfig,
    TuneResult,
    UnitResult,
    checkpoint_name,
    load_result,
    parse_duration,
    rung_sizes,
    survivors,
    tune,
    tune_contenders,
    within_weighted_speedup,
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


def test_successive_halving_keeps_the_best_within_weighted_speedups_and_spends_equal_shares_per_rung() -> None:
    assert rung_sizes(4, 2) == [4, 2, 1] and rung_sizes(5, 2) == [5, 3, 2, 1] and rung_sizes(1, 2) == [1]
    assert rung_sizes(9, 3) == [9, 3, 1]
    # Within-weighted speedup: a fast candidate far beyond D and a slow one surely within it lose to a fast near one.
    far = within_weighted_speedup(20.0, -0.05, 0.005, 0.01)
    near = within_weighted_speedup(15.0, -0.008, 0.005, 0.01)
    safe = within_weighted_speedup(5.0, 0.0, 0.005, 0.01)
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


def test_the_old_seed_keyword_warns_and_seeds_the_specialization() -> None:
    # Refused for its budget right after the warning: the deprecated spelling is read before any work.
    with pytest.warns(DeprecationWarning, match="write train_seed"), pytest.raises(UsageError, match="--budget"):
        tune(0.01, SINUSOID, budget_s=-1.0, seed=3)
    assert TuneConfig(search_study="s", parent_sha256="x", max_degradation=0.01, budget_s=1.0,
                      train_seed=3).confirmation().max_candidates == 4


def test_checkpoint_names_are_safe_file_names() -> None:
    assert checkpoint_name("00010:1") == "00010-1.pt"
    assert checkpoint_name("00010:2+00011:4@0.5") == "00010-2-00011-4-0.5.pt"


def test_the_error_rate_holds_when_candidates_are_specialized() -> None:
    """Fabricated scores: specialized and parent candidates, every one losing exactly D (least favourable).

    Each run draws the validation numbers ``tune`` decides on (the specialized candidates' last rung, the
    parent's own candidates frozen in the plan); ``tune_contenders`` assembles what reaches the test split and
    ``confirm_look`` (the step ``confirm_candidates`` runs) tests it, one pattern on two checkpoints among them.
    No run may confirm one more often than the 5% family-wise error allows.
    """
    rng = np.random.default_rng(0)
    runs, tasks, errors, confirmed_special = 1500, 120, 0, 0
    loss = 0.05
    config = TuneConfig(search_study="s", parent_sha256="x", max_degradation=loss, budget_s=1.0)
    specialized = (PlannedCandidate("00010:1", 16.0, -loss, -loss, 1.0, "special-a.pt"),
                   PlannedCandidate("00011:1", 13.0, -loss, -loss, 1.0, "special-b.pt"))
    for _ in range(runs):
        parents = []
        for pattern, speedup in (("00010:1", 16.0), ("00010:5", 8.0)):
            value = rng.normal(-loss, 0.02)  # the study's corrected validation difference
            if value - 1.645 * 0.02 >= -loss - 0.03:  # proposed (validation is asked for D + margin)
                parents.append(asdict(CandidateTest(pattern, None, value, speedup, val_corrected=value,
                                                    val_lower_bound=value - 1.645 * 0.02, val_standard_error=0.02,
                                                    checkpoint="parent.pt")))
        plan = Plan(specialized, (2, 1), parent_candidates=tuple(parents))
        results = [UnitResult(0, index, 10, rng.normal(-loss, 0.02), 0.02, 0.9, 1.0, 1.0) for index in range(2)]
        candidates = tune_contenders(plan, results, config)
        if not candidates:
            continue
        shared = rng.normal(0.0, 0.15, tasks)  # the baseline's per-task noise, common to every difference
        draws = {(c.pattern, c.checkpoint): -loss + shared * 0.3 + rng.normal(0.0, 0.1, tasks) for c in candidates}
        look = Look("tune", "fabricated", "fabricated test split", "one run", (), (),
                    tuple(c.pattern for c in candidates), True)
        ledger = Ledger(optuna.storages.InMemoryStorage(), user=False)
        decision, spending = confirm_look(candidates, lambda c, d=draws: d[(c.pattern, c.checkpoint)],
                                          TaskDesign.none(), look, ledger, max_degradation=loss, confidence=0.95)
        assert spending.number == 1
        if decision.selected is not None:
            errors += 1
            confirmed_special += decision.selected.checkpoint != "parent.pt"
    rate = errors / runs
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs), rate
    assert errors > 0 and confirmed_special > 0  # the simulation is near the boundary, not trivially safe


def test_specialized_candidates_are_corrected_like_the_parents_proposals() -> None:
    """Ranked on the tuning's validation tasks, then bounded on them: the winner's curse and a new group's gap."""
    config = TuneConfig(search_study="s", parent_sha256="x", max_degradation=0.01, budget_s=1.0)
    planned = tuple(PlannedCandidate(f"0001{i}:1", 16.0 - i, -0.005, -0.005, 1.0, f"special-{i}.pt")
                    for i in range(4))
    plan = Plan(planned, (4, 2))
    results = [UnitResult(0, 0, 10, 0.002, 0.004, 0.9, 1.0, 1.0), UnitResult(0, 1, 10, -0.004, 0.004, 0.9, 1.0, 1.0),
               UnitResult(0, 2, 10, -0.003, 0.004, 0.9, 1.0, 1.0),
               UnitResult(0, 3, 10, 0.0, 0.004, 0.9, 1.0, 1.0, val_group_gap=-0.006)]
    contenders = {c.pattern: c for c in tune_contenders(plan, results, config)}
    # The best of the four is pulled toward the others; the one a new group may move down by 0.6 points is out.
    best = contenders["00010:1"]
    assert best.val_corrected < best.val_difference and best.val_lower_bound == pytest.approx(
        best.val_corrected - 1.6449 * 0.004, abs=1e-4)
    assert "00013:1" not in contenders and {"00011:1", "00012:1"} <= set(contenders)


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
    monkeypatch.setattr("patternsearch.tuning._session.meta_update_times", _fixed_times)
    monkeypatch.setattr("patternsearch.tuning._session._sampling_seconds", lambda *args: 0.0)
    monkeypatch.setattr("patternsearch.tuning._session.TuningSession.unit_seconds", lambda self, pattern: 0.0)
    if not timed_speedups:
        monkeypatch.setattr("patternsearch.tuning._session.TuningSession.measured_speedups",
                            lambda self, patterns: {p: 20.0 - i for i, p in enumerate(dict.fromkeys(patterns))})


def _decisions(result: TuneResult) -> dict[str, Any]:
    """What a run decided, without the times it measured."""
    return {
        "plan": [(h.pattern, Path(h.checkpoint).name) for h in result.candidates],
        "rungs": [[(r.rung, r.iterations, round(r.val_difference, 6), round(r.score, 6)) for r in h.rungs]
                  for h in result.candidates],
        "selected": (result.selection.pattern, Path(result.selection.checkpoint or "").name),
        "tested": [(c.pattern, Path(c.checkpoint or "").name, c.confirmed,
                    None if c.lower_bound is None else round(c.lower_bound, 6))
                   for c in result.selection.confirmation.candidates],
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
    for history in straight.candidates:  # what ran: the checkpoint's own count; scored once, by the unit
        written = load_checkpoint(history.checkpoint)
        assert written.training["iteration"] == history.rungs[-1].iterations
        assert not [h for h in written.history if "val_score" in h]  # the meta-training did not validate too
        assert all(r.seconds > 0.0 for r in history.rungs)
    confirmation = straight.selection.confirmation
    assert confirmation.tasks == 10 and confirmation.candidates
    # The parent's version of a pattern whose specialized version passed validation is not tested beside it.
    tested = [(c.pattern, Path(c.checkpoint).parent == tmp_path / "straight" / "out") for c in confirmation.candidates]
    specialized = {pattern for pattern, is_specialized in tested if is_specialized}
    assert specialized and not [p for p, is_specialized in tested if not is_specialized and p in specialized]
    assert len(tested) <= 4
    # A rerun of the finished tuning does nothing and answers the same.
    assert _decisions(tune(D, spec, storage=straight_storage, study_name="tiny", out=tmp_path / "straight" / "out",
                           **TINY_TUNE)) == decided

    import patternsearch.tuning._session as module

    stages = {"plan": (module.TuningSession, "plan"), "specialize": (module, "specialize"),
              "measure": (module.TuningSession, "measure"), "confirm": (module.TuningSession, "confirm")}
    for stage, (owner, name) in stages.items():
        storage = _copy_storage(database, tmp_path / stage)
        # A first look at the split, as the straight run's was: a copy and a user ledger of its own (another machine).
        monkeypatch.setenv("PATTERNSEARCH_HOME", str(tmp_path / stage / "home"))
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


def test_a_budget_below_the_fixed_costs_is_refused_before_any_specialization(
        pattern_study: tuple[str, Path], sinusoid_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    storage, _ = pattern_study
    _fixed_costs(monkeypatch)  # a meta-update costs 50-60 ms: 2 candidates in rungs of 2 and 1 need 0.24 s
    spec = SINUSOID.but(checkpoint=str(sinusoid_checkpoint))
    with pytest.raises(UsageError, match=r"--budget 0s does not cover .* the smallest budget that works is 1s"):
        tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / "out", **{**TINY_TUNE, "budget_s": 0.2})
    assert "tiny.tune" not in optuna.get_all_study_names(storage)  # nothing planned: a rerun plans afresh
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_diverging_specialization_is_dropped_and_the_tuning_goes_on(
        pattern_study: tuple[str, Path], sinusoid_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import patternsearch.tuning._session as module

    storage, _ = pattern_study
    _fixed_costs(monkeypatch)
    original, doomed = module.specialize, []

    def diverging(source: Any, pattern: str, *args: Any, **kwargs: Any) -> Any:
        if not doomed or doomed[0] == pattern:  # the first candidate specialized always diverges
            doomed[:] = [pattern]
            raise FloatingPointError("non-finite inner-loop loss (nan)")
        return original(source, pattern, *args, **kwargs)

    monkeypatch.setattr(module, "specialize", diverging)
    result = tune(D, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=storage, study_name="tiny",
                  out=tmp_path / "out", **TINY_TUNE)
    dropped = next(h for h in result.candidates if h.pattern == doomed[0])
    assert dropped.rungs and all("non-finite" in r.diverged for r in dropped.rungs) and dropped.confirmation is None
    kept = next(h for h in result.candidates if h.pattern != doomed[0])
    assert kept.rungs[-1].diverged == "" and kept.rungs[-1].rung == len(result.candidates) - 1  # it went on
    assert result.selection.confirmation.tasks == 10  # the confirmation ran


def test_a_resumed_tuning_confirms_the_parents_candidates_frozen_in_its_plan(
        pattern_study: tuple[str, Path], sinusoid_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import patternsearch.tuning._session as module

    storage, _ = pattern_study
    _fixed_costs(monkeypatch)
    spec = SINUSOID.but(checkpoint=str(sinusoid_checkpoint))
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(module.TuningSession, "confirm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / "out", **TINY_TUNE)
    monkeypatch.undo()
    _fixed_costs(monkeypatch)
    stored = optuna.load_study(study_name="tiny.tune", storage=storage).user_attrs["tune_plan"]
    assert stored["parent_candidates"] and stored["record_version"] == 2
    # The live study may change (more trials) before the rerun: the confirmation reads the plan, not the study.
    monkeypatch.setattr(module.TuningSession, "own_candidates", lambda self: pytest.fail("recomputed from the study"))
    result = tune(D, spec, storage=storage, study_name="tiny", out=tmp_path / "out", **TINY_TUNE)
    parent_tested = {c.pattern for c in result.selection.confirmation.candidates
                     if c.checkpoint == str(sinusoid_checkpoint)}
    assert parent_tested <= {c["pattern"] for c in stored["parent_candidates"]}


def test_a_record_of_another_version_is_one_line(pattern_study: tuple[str, Path], sinusoid_checkpoint: Path,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    storage, _ = pattern_study
    _fixed_costs(monkeypatch)
    tune(D, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=storage, study_name="tiny",
         out=tmp_path / "out", **TINY_TUNE)
    tuning = optuna.load_study(study_name="tiny.tune", storage=storage)
    old = {k: v for k, v in tuning.user_attrs["tune_result"].items() if k not in ("record_version", "confirmation")}
    tuning.set_user_attr("tune_result", {**old, "seen_before": []})  # as stored before records had versions
    args = ["tune", "--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--storage", storage, "--study",
            "tiny", "--checkpoint", str(sinusoid_checkpoint), "--max-degradation", str(D), "--budget", "1.2s",
            "--candidates", "2", "--margin", "5", "--val-tasks", "8", "--tasks", "10", "--report-tasks", "8",
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    capsys.readouterr()
    assert cli.main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("patternsearch: error: the answer of tuning study 'tiny.tune' was written by another "
                           "version of patternsearch (record version none, this one reads 3); tune afresh"), last


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
    assert all(c.val_speedup == pytest.approx(timed[c.pattern]) for c in result.selection.confirmation.candidates)
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


def test_three_workers_on_a_server_storage_one_killed_make_one_plan_and_one_confirmation(
        sinusoid_checkpoint: Path, tmp_path: Path, postgres_database: str) -> None:
    """Three ``tune`` processes on PostgreSQL, one SIGKILLed in a unit: the others finish its work, once.

    One plan (the planned units, each completed once), the killed worker's unit retried, one look at the test
    split (one worker confirms while the others wait for its answer), and every survivor prints that answer.
    """
    import os
    import signal
    import subprocess
    import sys
    import uuid

    from optuna.trial import TrialState

    from patternsearch import create_benchmark
    from patternsearch.looks import Ledger
    from patternsearch.search import open_storage

    storage = postgres_database
    name = f"tune-{uuid.uuid4().hex[:12]}"
    optimize(12, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=storage, study_name=name, **TINY_STUDY)
    began = time.time()
    command = [sys.executable, "-m", "patternsearch", "tune", "--storage", storage, "--study", name,
               "--checkpoint", str(sinusoid_checkpoint), "--benchmark", "sinusoid", "--shots", "5", "--queries",
               "10", "--device", "cpu", "--max-degradation", str(D), "--budget", "8s", "--candidates", "3",
               "--margin", "5", "--val-tasks", "8", "--tasks", "10", "--report-tasks", "8", "--out",
               str(tmp_path / "out"), "--heartbeat-interval", "1", "--json"]
    logs = [tmp_path / f"worker{i}.err" for i in range(3)]  # files: a full pipe would stall a worker
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}) for log in logs]
    victim, deadline = workers[2], time.monotonic() + 240
    while time.monotonic() < deadline:  # SIGKILL the third worker while it runs a unit
        try:
            trials = optuna.load_study(study_name=f"{name}.tune", storage=storage).get_trials(deepcopy=False)
        except KeyError:
            trials = []
        if any(t.state == TrialState.RUNNING and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
               for t in trials):
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    else:
        pytest.fail("the third worker never ran a unit")
    answers = []
    for worker, log in zip(workers[:2], logs, strict=False):
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, log.read_text()[-2000:]
        answers.append(json.loads(out)["selection"])
    victim.wait(timeout=30)
    assert answers[0] == answers[1]  # the one stored answer
    tuning = optuna.load_study(study_name=f"{name}.tune", storage=storage)
    trials = tuning.get_trials(deepcopy=False)
    complete = [(t.user_attrs["rung"], t.user_attrs["slot"]) for t in trials
                if "rung" in t.user_attrs and t.state == TrialState.COMPLETE]
    assert sorted(complete) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]  # the plan's units, each once
    killed = [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
    assert killed and all(t.state == TrialState.FAIL for t in killed)  # failed by its heartbeat, then retried
    assert len(tuning.user_attrs["tune_plan"]["candidates"]) == 3
    looks = [entry for entry in Ledger(open_storage(storage), user=False).entries(create_benchmark("sinusoid"))
             if entry.look is not None and entry.look.command == "tune" and entry.look.when >= began]
    assert len(looks) == 1  # one worker confirmed; the other read its answer
    assert answers[0]["confirmation"]["look"]["number"] == looks[0].number


def test_the_shipped_tuned_checkpoint_is_a_specialization_of_the_shipped_one() -> None:
    from patternsearch.checkpoint import file_checksum, shipped_folder

    parent = shipped_folder() / "omniglot-small-conv4-5w1s.pt"
    tuned = load_checkpoint(shipped_folder() / "omniglot-small-conv4-5w1s-tuned.pt")
    assert tuned.parent["sha256"] == file_checksum(parent)
    assert tuned.parent["path"] == "patternsearch/checkpoints/omniglot-small-conv4-5w1s.pt"
    assert tuned.pattern is not None and tuned.mode == load_checkpoint(parent).mode
    assert (tuned.benchmark, tuned.model, tuned.ways, tuned.shots) == ("omniglot-small", "conv4", 5, 1)
    assert tuned.config["parent_sha256"] == tuned.parent["sha256"] and tuned.training["iteration"] > 0
