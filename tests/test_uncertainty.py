"""Confidence bounds for means over tasks that share classes: coverage under simulation, and real designs."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from patternsearch import create_benchmark
from patternsearch.benchmarks import Task, disjoint_task_sets
from patternsearch.uncertainty import TaskDesign, estimate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _calibration() -> ModuleType:
    """examples/interval_calibration.py: the simulator whose tables the README quotes."""
    spec = importlib.util.spec_from_file_location("interval_calibration", EXAMPLES / "interval_calibration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


calibration = _calibration()
Cell = calibration.Cell


def _se(runs: float) -> float:
    """Monte Carlo standard error of a coverage near 95% (300 runs: 1.26 points; 200 runs: 1.54)."""
    return math.sqrt(0.95 * 0.05 / runs)


# Bernoulli-query simulations (see the example's docstring). Tight is judged against the floor where the design is
# even enough to have one (calibration.width_floor: the narrowest width a bound covering at every unit variance can
# have; the oracle's own width is out of reach where the unit variance cannot be told from 0, as with no unit
# effect: floor 1.3-1.9 x the oracle), else against the oracle. Limits: the measured width with a few points of room.
GRID = [  # cell, runs, width limit (x floor, or x oracle without one), may over-cover (a unit sd of 0 looks like 0.01)
    (Cell(17, 20, 0.01, 0.96, False), 300, 2.3, True),  # few tasks per unit (x oracle)
    (Cell(9, 10, 0.01, 0.96, False), 300, 4.0, True),  # about as many tasks as units (x oracle)
    (Cell(17, 50, 0.01, 0.99, True), 300, 1.9, False),  # paired queries at the ceiling, s2 often at zero (x oracle)
    (Cell(26, 200, 0.01, 0.99, False), 300, 1.2, False),  # ceiling accuracies
    (Cell(17, 600, 0.03, 0.99, True), 200, 1.15, False),  # ceiling skew: a few characters lose a lot
    (Cell(17, 600, 0.0, 0.99, False), 200, 1.45, True),  # no unit effect: s2 estimated at zero in half the runs
    (Cell(9, 10, 0.03, 0.99, False), 300, 2.8, False),  # few tasks per unit near 100% (x oracle; 2.59 measured)
]


@pytest.fixture(scope="module")
def grid_results() -> list[dict[str, float]]:
    return [calibration.run_cell(cell, runs, seed=100 + i) for i, (cell, runs, _, _) in enumerate(GRID)]


def _problems(result: dict[str, float], width_limit: float, may_overcover: bool, prefix: str = "") -> list[str]:
    """What is wrong with a cell's lower bounds (empty when calibrated and tight enough)."""
    runs, problems = result["runs"], []
    coverage, zero_coverage = result[prefix + "coverage"], result[prefix + "zero_coverage"]
    if coverage < 0.95 - 2.5 * _se(runs):
        problems.append(f"coverage {coverage:.3f}")
    if not may_overcover and coverage > 0.99:
        problems.append(f"coverage {coverage:.3f} > 0.99: too wide")
    if result["zero_share"] * runs >= 40 and zero_coverage < 0.95 - 2.5 * _se(result["zero_share"] * runs):
        problems.append(f"coverage {zero_coverage:.3f} when the unit variance is estimated at zero")
    floor = 1.0 if math.isnan(result["width_floor"]) else result["width_floor"]
    if not prefix and result["width_ratio"] > width_limit * floor:
        problems.append(f"width {result['width_ratio']:.2f} x oracle > {width_limit} x {floor:.2f}")
    return problems


@pytest.mark.parametrize("index", range(len(GRID)))
def test_lower_bounds_are_calibrated_and_tight(grid_results: list[dict[str, float]], index: int) -> None:
    cell, _, width_limit, may_overcover = GRID[index]
    result = grid_results[index]
    assert result["unreliable"] == 0
    assert not _problems(result, width_limit, may_overcover), (cell, result)
    if cell.unit_sd >= 0.01 and cell.tasks >= 50:  # treating the tasks as independent would not keep the promise
        assert result["naive_coverage"] < 0.95 - 2.5 * _se(result["runs"]), result


def test_the_grid_rejects_the_previous_and_a_twice_too_wide_estimator(grid_results: list[dict[str, float]]) -> None:
    previous = [_problems(r, limit, over, prefix="previous_") for r, (_, _, limit, over) in zip(grid_results, GRID)]
    assert any(previous), previous
    doubled = [{**r, "width_ratio": 2 * r["width_ratio"]} for r in grid_results]
    assert all(_problems(r, limit, over) for r, (_, _, limit, over) in zip(doubled, GRID))


def test_the_width_floor_is_the_t_bound_when_units_dominate_and_above_the_oracle_when_they_may_be_absent() -> None:
    design = calibration.BalancedDesign(contrasts=16, residual=5000, eigenvalue=20.0, share=1 / 17, tasks=600)
    # Unit variance 100 x the task variance: the mean's variance is all units', and the best scale-equivariant
    # bound is Student's t on the 16 contrasts: t(16) / z x E[sqrt(chi2(16) / 16)] = 1.045 x the oracle's width.
    assert calibration.narrowest_width(design, 100.0) == pytest.approx(1.045, abs=0.01)
    # No unit variance, but nothing rules out one: no calibrated bound reaches the oracle's width.
    assert calibration.narrowest_width(design, 0.0) > 1.1
    # Units that do not enter the mean: the task variance is known from 5000 dof, and the floor is the oracle.
    unshared = calibration.BalancedDesign(contrasts=16, residual=5000, eigenvalue=20.0, share=1e-9, tasks=600)
    assert calibration.narrowest_width(unshared, 1.0) == pytest.approx(1.0, abs=0.01)
    # 20 tasks over 26 units: too uneven for the balanced reduction (REML's bound is narrower than its "floor").
    assert math.isnan(calibration.width_floor(Cell(26, 20, 0.0, 0.96, False)))


def test_the_skewness_correction_lowers_the_bound_where_the_mean_is_skewed() -> None:
    # 9 characters, 3-point effects at 99% (calibration.skewed_cells): the estimate sees the skew's sign, and the bound
    # as shipped and the one given the true skewness both cover more often than the uncorrected one (0.90 here).
    result = calibration.run_skewed_cell(Cell(9, 50, 0.03, 0.99, False), 200, seed=5)
    assert result["true_skewness"] < -0.2 and result["mean_estimated_skewness"] < -0.1, result
    assert result["coverage_without_correction"] < min(result["coverage"], result["coverage_true_skewness"]), result


def _quick_calibration(*options: str) -> dict:
    out = subprocess.run([sys.executable, str(EXAMPLES / "interval_calibration.py"), "--quick", "--json", *options],
                         check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def quick_calibration() -> dict:
    return _quick_calibration()


def test_interval_calibration_example_quick_mode(quick_calibration: dict) -> None:
    result = quick_calibration
    assert result["runs"] == 40 and len(result["cells"]) == 3 and len(result["power"]) == 2
    assert result["prior_power"] == 0.5
    assert result["summary"]["coverage within 3 s.e. of 95% or above"].endswith("of 3 cells")
    lowest = min(cell["coverage"] for cell in result["cells"])
    assert result["summary"]["lowest coverage"].startswith(f"{lowest:.3f} (")
    assert result["summary"]["width / oracle, all cells"].endswith("3 cells)")
    assert "1 cells" in result["summary"]["floor / oracle, no unit effect"]  # only 17 units x 600 tasks has a floor
    for cell in result["cells"]:
        assert {"coverage", "previous_coverage", "naive_coverage", "oracle_coverage", "width_ratio", "zero_share",
                "zero_coverage", "previous_zero_coverage", "truth", "width_floor"} <= cell.keys()
        assert math.isnan(cell["width_floor"]) or cell["width_floor"] >= 0.97  # the oracle's, less discretization
        assert 0.8 <= cell["coverage"] <= 1.0 and 0.5 <= cell["oracle_coverage"] <= 1.0
        assert 0.8 < cell["width_ratio"] < 6.0 and 0.0 <= cell["zero_share"] <= 1.0
        misses = [cell["miss_rates"][level] for level in ("0.05", "0.02", "0.0075")]
        assert misses == sorted(misses, reverse=True) and misses[0] == pytest.approx(1.0 - cell["coverage"])
    for row in result["power"]:
        assert row["true_difference"] == pytest.approx(-0.006, abs=1e-9)
        assert 0.0 <= row["new"] <= 1.0 and 0.0 <= row["previous"] <= 1.0 and row["oracle"] >= 0.3


def test_a_prior_with_more_mass_near_zero_narrows_the_bounds_where_few_tasks_cannot_rule_out_unit_effects(
        quick_calibration: dict) -> None:
    shipped, flatter = quick_calibration, _quick_calibration("--prior-power", "0.25")
    assert flatter["prior_power"] == 0.25
    few_tasks = [i for i, cell in enumerate(shipped["cells"]) if cell["tasks"] <= 20]
    assert len(few_tasks) == 2
    for i in few_tasks:  # the same seeded runs, with less weight on large unit variances
        assert flatter["cells"][i]["width_ratio"] < 0.95 * shipped["cells"][i]["width_ratio"], (i, shipped, flatter)


def test_estimates_that_the_data_cannot_support_say_so() -> None:
    one_unit = TaskDesign(((0, 1), (1, 2), (0, 2)), ((0, 0), (0, 0), (0, 0)))
    result = estimate([0.8, 0.9, 1.0], one_unit)
    assert not result.reliable and result.lower_bound(0.95) == -math.inf and result.ci95 == math.inf
    assert "no interval" in result.describe() and "one unit" in result.note
    single = estimate([0.9])
    assert not single.reliable and single.lower_bound(0.9) == -math.inf and "one task" in single.describe()
    same = estimate([0.5, 0.5, 0.5], TaskDesign(((0, 1), (1, 2), (4, 5)), ((0, 0), (0, 1), (2, 2))))
    assert same.reliable and same.standard_error == 0.0 and same.lower_bound(0.95) == 0.5
    assert "+/-" not in same.describe() and "no spread: all scores are equal; 3 tasks" in same.describe()


def test_a_call_on_600_tasks_is_fast() -> None:
    rng = np.random.default_rng(0)
    scores, classes = calibration.simulate(rng, Cell(26, 600, 0.01, 0.96, False))
    design = calibration.design_of(classes)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        estimate(scores, design)
        times.append(time.perf_counter() - started)
    # About 4 ms on an idle core; the median, with room, because other processes share the cores.
    assert sorted(times)[len(times) // 2] < 0.05, times


def test_independent_tasks_give_the_usual_interval() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0.9, 0.05, 400)
    result = estimate(scores)
    assert result.standard_error == pytest.approx(scores.std(ddof=1) / 20)
    assert result.ci95 == pytest.approx(1.966 * result.standard_error, rel=1e-3)
    assert (result.tasks, result.classes, result.units) == (400, None, None)
    # Symmetric scores: the skewness correction is (nearly) nothing, and the bound is Student's t.
    assert abs(result.skewness) < 0.02
    assert result.lower_bound(0.95) == pytest.approx(result.mean - 1.6487 * result.standard_error,
                                                     abs=0.02 * result.standard_error)


def test_independent_scores_near_100_percent_get_the_skewness_correction() -> None:
    # 50 independent tasks of 75 queries at clip(99% + N(0, 3 points)): the scores are left-skewed, Student's t alone
    # covers 0.918 in these 3000 seeded runs, the corrected bound 0.943 (--independent prints the other settings).
    runs = 3000
    result = calibration.run_independent_cell(0.99, 0.03, 50, runs, seed=0)
    assert result["coverage_without_correction"] < 0.95 - 3 * _se(runs) <= result["coverage"], result
    assert result["width_ratio"] < 1.25, result


def test_interval_calibration_example_independent_mode() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "interval_calibration.py"), "--independent", "--runs", "50",
                          "--json"], check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout)
    assert result["runs"] == 50 and len(result["cells"]) == len(calibration.independent_cells()) == 40
    for cell in result["cells"]:
        assert 0.5 <= cell["coverage_without_correction"] <= cell["coverage"] <= 1.0, cell
        assert 0.5 < cell["width_ratio"] < 4.0, cell
    # Five tasks at 99.5% are sometimes all perfect (no spread, so the bound is the mean); at 80% never.
    assert any(c["no_spread"] > 0 for c in result["cells"] if c["base"] == 0.995 and c["tasks"] == 5)
    assert all(c["no_spread"] == 0 for c in result["cells"] if c["base"] == 0.8)


def test_estimate_says_what_it_rests_on() -> None:
    design = TaskDesign(((0, 1), (1, 2), (4, 5)), ((0, 0), (0, 1), (2, 2)))
    result = estimate([0.8, 0.9, 1.0], design)
    assert (result.tasks, result.classes, result.units) == (3, 5, 3)
    assert "3 tasks, 5 classes from 3 independent units" in result.describe()
    with pytest.raises(ValueError, match="design of 3 tasks"):
        estimate([0.5, 0.5], design)


def test_omniglot_tasks_carry_their_classes_and_characters(omniglot_root: Path) -> None:
    bench = create_benchmark("omniglot-small", ways=5, shots=1, queries=2, data_root=omniglot_root)
    tasks = bench.tasks("test", 50, seed=0)
    assert all(t.classes is not None and len(set(t.classes)) == 5 for t in tasks)
    assert all(t.units == tuple(c // 4 for c in t.classes) for t in tasks)  # type: ignore[union-attr]
    design = TaskDesign.of(tasks)
    assert (design.distinct_units() or 0) <= 26 < (design.distinct_classes() or 0) <= 104
    moved = tasks[0].to("cpu")
    assert moved.classes == tasks[0].classes and moved.units == tasks[0].units and moved.groups == tasks[0].groups
    # Each character's alphabet is its group: validation's two (Greek, 24 characters; Tagalog, 17), test's one.
    validation = bench.tasks("val", 200, seed=0)
    alphabet = {u: g for t in validation for u, g in zip(t.units or (), t.groups or (), strict=True)}
    assert all(g == (u >= 24) for u, g in alphabet.items()) and set(alphabet.values()) == {0, 1}
    assert {g for t in tasks for g in t.groups or ()} == {0}
    assert TaskDesign.of(validation).subset([3, 1]).groups == (validation[3].groups, validation[1].groups)


def test_confirmation_and_report_tasks_share_no_class(omniglot_root: Path) -> None:
    bench = create_benchmark("omniglot-small", ways=5, shots=1, queries=2, data_root=omniglot_root)
    first, second, disjoint = disjoint_task_sets(bench, "test", 60, 40, seed=0)
    assert disjoint and len(first) == 60 and len(second) == 40
    units = [{u for t in tasks for u in t.units or ()} for tasks in (first, second)]
    assert not units[0] & units[1] and (len(units[0]), len(units[1])) == (20, 6)
    again, _, _ = disjoint_task_sets(bench, "test", 60, 40, seed=0)
    assert all(a.classes == b.classes and bool((a.x_query == b.x_query).all()) for a, b in zip(first, again))
    # The whole split is unchanged: episodes equal those of before the split existed.
    assert bench.tasks("test", 1, seed=0)[0].classes == bench.split("test").task(0, 0).classes


def test_sources_without_classes_fall_back_to_disjoint_episodes() -> None:
    bench = create_benchmark("sinusoid", shots=5, queries=5)
    first, second, disjoint = disjoint_task_sets(bench, "test", 3, 2, seed=0)
    assert not disjoint and len(first) == 3 and len(second) == 2
    assert not torch_equal(first[0], second[0])


def torch_equal(a: Task, b: Task) -> bool:
    return bool((a.x_support == b.x_support).all())
