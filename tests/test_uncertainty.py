"""Confidence bounds for means over tasks that share classes: coverage under simulation, and real designs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patternsearch import create_benchmark
from patternsearch.benchmarks import Task, disjoint_task_sets
from patternsearch.uncertainty import TaskDesign, estimate


def _crossed(rng: np.random.Generator, units: int, unit_sd: float, tasks: int = 600) -> tuple[np.ndarray, TaskDesign]:
    """Scores = mean of the task's unit effects + task noise; the true mean is 0."""
    classes = [tuple(int(c) for c in rng.choice(units * 4, 5, replace=False)) for _ in range(tasks)]
    design = TaskDesign(tuple(classes), tuple(tuple(c // 4 for c in task) for task in classes))
    effects = rng.normal(0, unit_sd, units)
    assert design.units is not None
    scores = np.array([effects[list(u)].mean() for u in design.units]) + rng.normal(0, 0.024, tasks)
    return scores, design


@pytest.mark.parametrize(("units", "unit_sd"), [(13, 0.0), (13, 0.01), (26, 0.03)])
def test_one_sided_bounds_cover_at_their_rate_when_tasks_share_classes(units: int, unit_sd: float) -> None:
    rng = np.random.default_rng(units)
    runs = 300
    covered = naive_covered = 0
    for _ in range(runs):
        scores, design = _crossed(rng, units, unit_sd)
        covered += estimate(scores, design).lower_bound(0.95) <= 0.0
        naive_covered += estimate(scores).lower_bound(0.95) <= 0.0
    # 300 runs: standard error 1.3 points at 95%.
    assert covered / runs >= 0.92, covered / runs
    if unit_sd >= 0.01:  # treating the tasks as independent would not keep the promise
        assert naive_covered / runs < 0.85, naive_covered / runs


def test_independent_tasks_give_the_usual_interval() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0.9, 0.05, 400)
    result = estimate(scores)
    assert result.standard_error == pytest.approx(scores.std(ddof=1) / 20)
    assert result.ci95 == pytest.approx(1.966 * result.standard_error, rel=1e-3)
    assert (result.tasks, result.classes, result.units) == (400, None, None)


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
    assert moved.classes == tasks[0].classes and moved.units == tasks[0].units


def test_confirmation_and_report_tasks_share_no_class(omniglot_root: Path) -> None:
    bench = create_benchmark("omniglot-small", ways=5, shots=1, queries=2, data_root=omniglot_root)
    first, second, disjoint = disjoint_task_sets(bench, "test", 60, 40, seed=0)
    assert disjoint and len(first) == 60 and len(second) == 40
    units = [{u for t in tasks for u in t.units or ()} for tasks in (first, second)]
    assert not units[0] & units[1] and (len(units[0]), len(units[1])) == (17, 9)
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
