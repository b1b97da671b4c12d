"""Candidates and the baseline scored on the same tasks, each side on its own checkpoint: every comparison's pair."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np

from ..benchmarks import Task
from ..experiment import Experiment
from ..measurement import CachedScorer, task_chunks
from ..pattern import Pattern
from ..uncertainty import TaskDesign


class PairedScores:
    """Candidates and the baseline scored on one fixed task list, each on its own checkpoint.

    The candidate side always adapts ``experiment``'s model and the baseline
    side ``reference``'s (the same experiment unless a specialized
    checkpoint is compared with its parent), whatever the patterns: a
    candidate equal to the baseline pattern is still scored on the
    candidate's checkpoint.
    """

    def __init__(self, experiment: Experiment, reference: Experiment, baseline: Pattern,
                 tasks: Sequence[Task]) -> None:
        self.design = TaskDesign.of(tasks)
        self.tasks = list(tasks)
        self.baseline = baseline
        self._candidate = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
        self._reference = self._candidate if reference is experiment else CachedScorer(
            reference.model, reference.benchmark, tasks, reference.inner_lr)
        self._experiment = experiment

    def on(self, experiment: Experiment) -> PairedScores:
        """The same tasks and baseline scorer, with candidates adapted on ``experiment``'s checkpoint."""
        other = copy.copy(self)
        if experiment is not self._experiment:
            other._experiment = experiment
            other._candidate = CachedScorer(experiment.model, experiment.benchmark, self.tasks, experiment.inner_lr)
        return other

    def candidate_scores(self, pattern: str | Pattern, advance: Callable[[int], None] | None = None) -> np.ndarray:
        """Per-task scores of ``pattern`` adapted on the candidate's checkpoint (``advance``: see :func:`scores`)."""
        return scores(self._candidate, self._experiment.pattern(pattern), advance)

    def baseline_scores(self, advance: Callable[[int], None] | None = None) -> np.ndarray:
        """Per-task scores of the baseline adapted on the baseline's checkpoint (``advance``: see :func:`scores`)."""
        return scores(self._reference, self.baseline, advance)

    def differences(self, pattern: str | Pattern) -> np.ndarray:
        """Paired per-task differences, candidate minus baseline."""
        return self.candidate_scores(pattern) - self.baseline_scores()


def scores(scorer: CachedScorer, pattern: Pattern, advance: Callable[[int], None] | None = None) -> np.ndarray:
    """``pattern``'s scores on every task of ``scorer``, in task order.

    Args:
        scorer: The scorer of the tasks.
        pattern: The pattern.
        advance: Called with the number of tasks scored as scoring goes (a
            progress bar); with it the tasks are scored ten at a time.
    """
    if advance is None:
        return scorer.scores(pattern)
    result = np.empty(len(scorer))
    with scorer.threads():
        for chunk in task_chunks(len(scorer), min(len(scorer), 10)):
            result[chunk] = scorer.scores(pattern, chunk)
            advance(chunk.size)
    return result
