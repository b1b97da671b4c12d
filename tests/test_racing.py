from __future__ import annotations

import numpy as np
import pytest

from patternsearch.measurement import MIN_TASKS, Rival, race, surely_worse, task_chunks
from patternsearch.uncertainty import TaskDesign


def test_chunks_cover_every_task_once_and_spread_over_the_list() -> None:
    chunks = task_chunks(203, 8)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(203))
    assert all(chunk.min() < 8 and chunk.max() >= 195 for chunk in chunks)
    assert [c.tolist() for c in task_chunks(3, 8)] == [[0], [1], [2]]


def test_surely_worse_needs_enough_tasks_and_a_clear_gap() -> None:
    rng = np.random.default_rng(0)
    theirs = rng.uniform(0.8, 1.0, 200)
    assert surely_worse(theirs - 0.1 + rng.normal(0, 0.02, 200), theirs)
    assert not surely_worse(theirs[: MIN_TASKS - 1] - 0.1, theirs[: MIN_TASKS - 1])
    assert not surely_worse(theirs + rng.normal(0, 0.05, 200), theirs)
    assert not surely_worse(theirs + 0.01, theirs)


def test_race_stops_at_the_first_look_that_is_sure_and_reports_what_it_scored() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.5, 0.7, 200)
    strong = Rival(number=4, time=0.1, scores=truth + 0.3)
    asked: list[np.ndarray] = []

    def score(tasks: np.ndarray) -> np.ndarray:
        asked.append(tasks)
        return truth[tasks]

    outcome = race(score, 200, [Rival(number=2, time=0.1, scores=truth - 0.2), strong])
    assert outcome.dominated_by == 4
    assert len(asked) == 1 and outcome.tasks.size == 25  # one strided chunk of 200 / 8 was enough
    assert np.array_equal(outcome.tasks, np.sort(asked[0]))
    np.testing.assert_array_equal(outcome.scores, truth[outcome.tasks])


def test_race_without_rivals_scores_everything_in_one_call() -> None:
    calls: list[int] = []
    outcome = race(lambda tasks: calls.append(tasks.size) or np.ones(tasks.size), 50, [])
    assert calls == [50] and outcome.dominated_by is None and outcome.tasks.tolist() == list(range(50))


@pytest.mark.parametrize(("gap", "allowed"), [(0.0, 0.05), (0.005, 0.01)])
def test_a_pattern_as_good_as_its_rivals_is_rarely_stopped(gap: float, allowed: float) -> None:
    # Accuracy-like per-task scores (15 queries x 5 ways = 75 per task), paired through a shared task difficulty.
    # A tie with a faster rival is still dominated, so only a better pattern must (almost) never stop.
    rng = np.random.default_rng(2)
    runs, stopped = 400, 0
    for _ in range(runs):
        difficulty = rng.uniform(0.85, 0.99, 200)
        rivals = [Rival(i, 0.1, rng.binomial(75, difficulty) / 75) for i in range(3)]
        mine = rng.binomial(75, np.clip(difficulty + gap, 0, 1)) / 75
        stopped += race(lambda tasks, mine=mine: mine[tasks], 200, rivals).dominated_by is not None
    assert stopped <= allowed * runs


def _validation_design(rng: np.random.Generator, tasks: int = 200, units: int = 41) -> TaskDesign:
    """5-way tasks over ``units`` characters x 4 rotations, like omniglot-small's validation split."""
    classes = [tuple(int(c) for c in rng.choice(units * 4, 5, replace=False)) for _ in range(tasks)]
    return TaskDesign(tuple(classes), tuple(tuple(c // 4 for c in task) for task in classes))


def _races(gap: float, character_sd: float, runs: int, seed: int) -> tuple[int, int]:
    """Races of a pattern ``gap`` better than three rivals on average, with character effects on the difference.

    Returns how many races stopped it and how many of those were false: the pattern's accuracy over all the fixed
    tasks was at least that of the rival that stopped it, so it would have stayed on the front.
    """
    rng = np.random.default_rng(seed)
    stops = false_stops = 0
    for _ in range(runs):
        design = _validation_design(rng)
        units = np.array(design.units)
        base = rng.uniform(0.88, 0.99, 41)[units].mean(axis=1)
        rivals = [Rival(i, 0.1, rng.binomial(75, base) / 75) for i in range(3)]
        interaction = rng.normal(0, character_sd, 41)[units].mean(axis=1)
        mine = rng.binomial(75, np.clip(base + interaction + gap, 0, 1)) / 75
        outcome = race(lambda tasks, mine=mine: mine[tasks], 200, rivals)
        if outcome.dominated_by is not None:
            stops += 1
            false_stops += mine.mean() >= rivals[outcome.dominated_by].scores.mean()
    return stops, false_stops


@pytest.mark.parametrize("character_sd", [0.01, 0.03])
def test_a_tied_pattern_is_rarely_stopped_falsely_with_character_effects(character_sd: float) -> None:
    # Tasks that share a character err together. A stop is false only when the pattern's accuracy over all the
    # fixed tasks (what the front is computed on) is at least the rival's. Measured (seed 11, 200 races): the
    # independent-task bound stopped 0 races at 1 point and 20 at 3 points, none of them falsely.
    stops, false_stops = _races(0.0, character_sd, runs=100, seed=11)
    assert false_stops <= 2, (stops, false_stops)  # stated rate: at most 2% false stops per race


def test_a_clearly_worse_pattern_is_still_stopped() -> None:
    stops, false_stops = _races(-0.02, 0.0, runs=60, seed=12)  # 2 points worse than its rivals
    assert stops >= 0.85 * 60 and false_stops == 0, (stops, false_stops)
