"""Early stopping of dominated patterns: score tasks in chunks, stop once a faster trial is surely better.

A pattern is worth its full accuracy only if it can reach the Pareto front,
that is, if no trial at least as fast is more accurate. Its latency is known
before its accuracy, so its validation tasks are scored in strided chunks and,
after each chunk, its per-task scores are compared with those of the most
accurate faster trials on the same tasks (a paired comparison). Once the upper
confidence bound of the mean difference is below zero, the pattern is
dominated with high confidence and scoring stops: a successive-halving style
race in which only clear losers leave early. Patterns near the front are
always scored on every task.

What the race predicts is the pattern's accuracy over *the study's fixed
tasks* (the Pareto front is computed on them), not over new tasks. The
chunks are strided, so the scored tasks are a spread-out sample of that fixed
list, and the character effects they share with the unscored ones are part of
what is predicted, not extra noise. The bound therefore comes from
:func:`patternsearch.uncertainty.estimate` with the tasks as independent
draws; the class-aware interval, whose target is new tasks from new
characters, would answer another question and stop far fewer dominated
patterns (measured, 200-trial flags study, same host and day: 684 s and 26
stops with it, 564 s and 65 stops without). ``tests/test_racing.py`` simulates races with character effects of
1 and 3 points on the difference and states the false-stop rate: how often a
pattern whose accuracy over all the fixed tasks is at least that of the rival
that stopped it is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..uncertainty import estimate

DEFAULT_CHUNKS = 8
DEFAULT_Z = 3.0
MIN_TASKS = 20  # fewer paired differences are too few for a normal bound
MAX_RIVALS = 3  # the most accurate faster trials; more comparisons would inflate false stops


@dataclass(frozen=True)
class Rival:
    """A fully scored trial of the study, a candidate to dominate the pattern being scored.

    Attributes:
        number: Its trial number.
        time: Its time objective.
        scores: Its per-task scores on all the fixed tasks, in task order.
    """

    number: int
    time: float
    scores: np.ndarray


@dataclass(frozen=True)
class RaceOutcome:
    """What a race scored.

    Attributes:
        tasks: Indices of the tasks scored, ascending.
        scores: Their scores, in the same order.
        dominated_by: The trial that beat the pattern with confidence, or None
            when every task was scored.
    """

    tasks: np.ndarray
    scores: np.ndarray
    dominated_by: int | None


def task_chunks(num_tasks: int, chunks: int) -> list[np.ndarray]:
    """Strided chunks of ``range(num_tasks)``: each spreads over the whole task list."""
    return [chunk for chunk in (np.arange(start, num_tasks, chunks) for start in range(chunks)) if chunk.size]


def surely_worse(mine: np.ndarray, theirs: np.ndarray, z: float = DEFAULT_Z) -> bool:
    """True when the paired mean of ``mine - theirs`` over the fixed tasks is below zero at confidence ``Phi(z)``.

    Args:
        mine: This pattern's scores on some of the fixed tasks.
        theirs: The rival's scores on the same tasks.
        z: Normal quantile of the one-sided confidence (3: 99.87%).
    """
    differences = np.asarray(theirs, dtype=float) - np.asarray(mine, dtype=float)
    if differences.size < MIN_TASKS:
        return False
    return bool(estimate(differences).lower_bound(float(special.ndtr(z))) > 0)


def race(
    score: Callable[[np.ndarray], np.ndarray],
    num_tasks: int,
    rivals: Sequence[Rival],
    *,
    chunks: int = DEFAULT_CHUNKS,
    z: float = DEFAULT_Z,
) -> RaceOutcome:
    """Scores tasks chunk by chunk until done or surely worse than a rival.

    Args:
        score: Scores the given task indices (in that order).
        num_tasks: How many fixed tasks there are.
        rivals: Trials at least as fast; the :data:`MAX_RIVALS` most accurate are compared.
        chunks: Number of strided chunks (looks).
        z: One-sided normal quantile of the stopping bound; 3 gives about a
            0.1% chance per look of stopping a pattern that is in fact as
            accurate as the rival.

    Returns:
        The tasks scored, their scores, and the rival that won (if any).
    """
    strongest = sorted(rivals, key=lambda r: -float(np.mean(r.scores)))[:MAX_RIVALS]
    tasks: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    winner = None
    for chunk in task_chunks(num_tasks, chunks if strongest else 1):
        tasks.append(chunk)
        scores.append(np.asarray(score(chunk), dtype=float))
        scored, mine = np.concatenate(tasks), np.concatenate(scores)
        if scored.size == num_tasks:
            break
        winner = next((r.number for r in strongest if surely_worse(mine, r.scores[scored], z)), None)
        if winner is not None:
            break
    order = np.argsort(scored)
    return RaceOutcome(scored[order], mine[order], winner)
