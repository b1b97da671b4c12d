from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from patternsearch import create_benchmark
from patternsearch.confirmation import CandidateTest
from patternsearch.looks import Ledger
from patternsearch.search import open_storage, optimize

from .conftest import SINUSOID
from .test_confirmation import FLAGS_FRONT, _front

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_custom_model_api_example_runs() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "custom_model_api.py")], check=True,
                         capture_output=True, text=True, timeout=300)
    assert "max relative error vs reference" in out.stdout


def test_search_speed_example_replays_a_study(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(10, SINUSOID.but(checkpoint=sinusoid_checkpoint), tasks=24, latency_tasks=1, repeats=1,
             storage=storage, progress=False)
    out = subprocess.run([sys.executable, str(EXAMPLES / "search_speed.py"), "--storage", storage, "--checkpoint",
                          str(sinusoid_checkpoint), "--json"],
                         check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    result = json.loads(out.stdout)
    assert result["trials"] == 10 and result["tasks"] == 24
    assert result["max_accuracy_difference"] < 1e-5
    # The replay compares each pattern with its rivals by the time objective the study stored (a latency ratio;
    # it once passed milliseconds), so its races end as the study's did.
    assert result["time_objective_mismatches"] == []
    assert result["stops_unlike_the_study"] == 0 and result["stops_as_in_the_study"] == result["distinct_patterns"]


def test_sampler_comparison_example_runs(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(2, SINUSOID.but(checkpoint=sinusoid_checkpoint), tasks=6, latency_tasks=1, repeats=1, max_steps=3,
             baseline="111:3", storage=storage, progress=False)
    out = subprocess.run([sys.executable, str(EXAMPLES / "sampler_comparison.py"), "--storage", storage,
                          "--checkpoint", str(sinusoid_checkpoint), "--trials", "12", "--seeds", "2",
                          "--samplers", "tpe", "random"],
                         check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    result = json.loads(out.stdout)
    assert result["patterns"] == 7 * 3 + 1
    assert set(result["samplers"]) == {"tpe", "random"}
    for numbers in result["samplers"].values():
        assert 1 <= numbers["distinct_patterns"] <= 12 and 0 <= numbers["found_optimum"] <= 1


def test_bring_your_own_example_trains_imports_searches_and_selects(omniglot_root: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "bring_your_own.py"), "--data-root", str(omniglot_root),
                          "--out", str(tmp_path / "byo"), "--iterations", "4", "--meta-batch", "2", "--trials", "4",
                          "--tasks", "20", "--test-tasks", "20", "--timed-rounds", "2", "--json"],
                         check=True, capture_output=True, text=True, timeout=600, env=os.environ)
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert ":" in result["pattern"] and result["test_accuracy"] is not None and result["speedup"] > 0
    assert 0.0 <= result["imported_full_accuracy"] <= 1.0
    assert (tmp_path / "byo" / "my_maml.pt").is_file() and (tmp_path / "byo" / "imported.pt").is_file()


def test_compare_spaces_example_draws_both_fronts(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    spec = SINUSOID.but(checkpoint=sinusoid_checkpoint)
    common = dict(tasks=8, latency_tasks=1, repeats=1, storage=storage, progress=False)
    optimize(6, spec, study_name="flags", **common)
    optimize(6, spec, study_name="phases", space="phases", search_lr=True, **common)
    optimize(3, spec, study_name="other-tasks", **{**common, "tasks": 9})
    out = subprocess.run([sys.executable, str(EXAMPLES / "compare_spaces.py"), "--storage", storage,
                          "--out", str(tmp_path / "cmp")], check=True, capture_output=True, text=True, timeout=300,
                         env=os.environ)
    assert "| 1 pt |" in out.stdout
    result = json.loads((tmp_path / "cmp" / "compare_spaces.json").read_text())
    assert result["phases"]["space"]["space"] == "phases" and result["flags"]["space"]["space"] == "flags"
    for data in result.values():
        assert data["baseline"]["pattern"] == "111:10" and data["front"]
        assert data["fastest_within"]["0.01"]["speedup"] >= 1.0
    assert (tmp_path / "cmp" / "compare_spaces.png").stat().st_size > 0
    mismatch = subprocess.run([sys.executable, str(EXAMPLES / "compare_spaces.py"), "--storage", storage,
                               "--phases-study", "other-tasks", "--out", str(tmp_path / "cmp2")],
                              capture_output=True, text=True, timeout=300, env=os.environ)
    assert mismatch.returncode != 0 and "differ in tasks" in mismatch.stderr


def test_meta_update_cost_example_times_each_inner_loop(omniglot_root: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "meta_update_cost.py"), "--data-root", str(omniglot_root),
                          "--patterns", "11111:2", "00001:2", "--meta-batch", "1", "--batches", "1", "--rounds", "1",
                          "--json"], check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    result = json.loads(out.stdout)
    rows = {row["pattern"]: row for row in result["rows"]}
    assert set(rows) == {"11111:1", "11111:2", "00001:2"} and result["second_order"]
    assert rows["11111:2"]["vs_full_same_steps"] == 1.0 and rows["00001:2"]["vs_full_same_steps"] > 0
    assert all(row["seconds_per_meta_update"] > 0 for row in rows.values())


def test_scoring_paths_example_compares_threads_and_batching(omniglot_root: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "scoring_paths.py"), "--data-root", str(omniglot_root),
                          "--tasks", "4", "--rounds", "1", "--patterns", "00011:1+00001:1@2", "--device", "cpu",
                          "--json"], check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    result = json.loads(out.stdout)
    assert [row["pattern"] for row in result["rows"]] == ["00011:1+00001:1@2"]
    assert result["rows"][0]["threads_s"] > 0 and result["rows"][0]["batched_s"] > 0
    assert result["largest_score_difference"] <= 2.01 / 75  # at most two flipped queries of 75


def test_confirmation_width_example_splits_the_bound(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(3, SINUSOID.but(checkpoint=sinusoid_checkpoint), tasks=6, latency_tasks=1, repeats=1, max_steps=3,
             baseline="111:3", storage=storage, progress=False, study_name="sinusoid")
    out = subprocess.run([sys.executable, str(EXAMPLES / "confirmation_width.py"), "--storage", storage,
                          "--study", "sinusoid", "--checkpoint", str(sinusoid_checkpoint), "--tasks", "20",
                          "--patterns", "001:1", "011:2", "--json"],
                         check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    result = json.loads(out.stdout)
    assert result["baseline"] == "111:3" and [r["pattern"] for r in result["patterns"]] == ["001:1", "011:2"]
    for row in result["patterns"]:
        # Independent tasks (sinusoid has no classes): the same standard error both ways, a t bound below the normal.
        assert row["standard_error"] == row["independent_standard_error"] > 0
        assert row["lower_bound"] < row["known_variance_bound"] < row["difference"]
    looks = Ledger(open_storage(storage), user=False).looks(create_benchmark("sinusoid"))
    assert [look.command for look in looks] == ["examples/confirmation_width.py"] and looks[0].informs


def test_replay_example_replays_every_rule_from_one_cache(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(8, SINUSOID.but(checkpoint=sinusoid_checkpoint), tasks=12, latency_tasks=1, repeats=1, max_steps=3,
             baseline="111:3", storage=storage, progress=False)
    command = [sys.executable, str(EXAMPLES / "replay_selection.py"), "--storage", storage, "--checkpoint",
               str(sinusoid_checkpoint), "--seeds", "0-1", "--tasks", "12", "--max-degradation", "0.5",
               "--cache", str(tmp_path / "cache"), "--time", "--timed-tasks", "1", "--timed-rounds", "1", "--json"]
    first = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    result = json.loads(first.stdout)
    assert result["baseline"] == "111:3" and result["seeds"] == [0, 1] and result["front"]
    assert result["speedup_source"].startswith("bench") and set(result["speedups"]) == set(result["front"])
    for row in result["rules"].values():
        assert set(row["candidates"]) <= set(result["front"]) and len(row["selections"]) == 2
        assert row["worst_speedup"] <= row["mean_speedup"]
        assert all(s["pattern"] in [*row["candidates"], "111:3"] for s in row["selections"])
    assert "scoring" in first.stderr
    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300, env=os.environ)
    assert "scoring" not in again.stderr and json.loads(again.stdout)["rules"] == result["rules"]  # from the cache
    looks = Ledger(open_storage(storage), user=False).looks(create_benchmark("sinusoid"))
    assert [look.units for look in looks] == [("seed:0",), ("seed:1",)] * 2  # a look per seed, each run


def _selection_rules():  # type: ignore[no-untyped-def]
    """``examples/selection_rules.py``, the rules the replay and the power simulation compare."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import selection_rules
    finally:
        sys.path.remove(str(EXAMPLES))
    return selection_rules


def test_spread_candidates_span_the_front_in_log_speedup() -> None:
    spread_candidates = _selection_rules().spread_candidates
    front = _front(FLAGS_FRONT)
    picks = spread_candidates(front, 8)
    names = [c.pattern for c in picks]
    assert names[0] == "00110:1" and names[-1] == "01111:9" and len(names) == 8  # both ends, fastest first
    speeds = [c.val_speedup for c in picks]
    assert speeds == sorted(speeds, reverse=True)
    gaps = np.diff(np.log(speeds))
    assert gaps.min() < 0 and -gaps.max() < 1.5 * np.log(15.73 / 1.85) / 7  # no gap much wider than an even step
    assert "00011:6" in names and any(name.startswith("00111") for name in names)  # the middle is tested
    assert spread_candidates(front[:3], 8) == front[:3]
    assert spread_candidates(front, 1) == front[-1:]
    with pytest.raises(ValueError, match="speedup"):
        spread_candidates([CandidateTest("a", None, 0.0, None)], 2)
