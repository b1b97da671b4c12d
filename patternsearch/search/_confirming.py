"""Candidates confirmed on a test split's confirmation tasks and the winner reported on its fresh tasks.

The step ``select``, ``select --pattern`` and ``tune`` share: the look is recorded in the ledgers of looks
(:mod:`patternsearch.looks`) and spends its share of the error rate; the graphical procedure of
:mod:`patternsearch.confirmation` decides; the selected pattern (or the baseline) is then measured on report
tasks that took no part in the decision, and timed next to the baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import numpy as np

from ..benchmarks import Task, disjoint_task_sets
from ..checkpoint import file_checksum
from ..confirmation import (
    CandidateTest,
    Decision,
    confirm_in_sequence,
)
from ..devices import device_name
from ..errors import AdaptationDiverged
from ..experiment import Experiment
from ..looks import Ledger, Look, Spending, look_identity, scores_checksum, unit_names
from ..measurement import DeploymentTiming, deployment_timing, environment
from ..pattern import Pattern
from ..uncertainty import TaskDesign, estimate
from ._paired import PairedScores
from ._record import ConfirmationEvidence, FreshReport, LookSpent, Selection, ValidationEvidence
from ._settings import REPORT_TIMED_ROUNDS, REPORT_TIMED_TASKS, ConfirmationSettings
from ._storage import DEFAULT_STORAGE, open_storage


def confirm_pattern(
    experiment: Experiment,
    pattern: str,
    max_degradation: float = 0.01,
    *,
    storage: str = DEFAULT_STORAGE,
    baseline: str = "full",
    baseline_checkpoint: str | os.PathLike[str] | None = None,
    confidence: float = 0.95,
    test_tasks: int = 600,
    report_tasks: int | None = None,
    test_seed: int = 0,
    timed_tasks: int = REPORT_TIMED_TASKS,
    timed_rounds: int = REPORT_TIMED_ROUNDS,
    accept_test_looks: bool = False,
) -> Selection:
    """Confirms one given pattern against the baseline with the selection's rule, without a study.

    For a pattern chosen elsewhere, typically a specialized checkpoint's
    pattern against full MAML on its parent (``baseline_checkpoint``): the
    pattern is confirmed when the one-sided lower bound of its paired
    difference on the confirmation tasks is at least ``-D`` at the error
    rate this look may spend (see :mod:`patternsearch.looks`), and its
    accuracies are then measured on fresh report tasks (see the module doc).

    Args:
        experiment: Benchmark, checkpoint and model the pattern adapts.
        pattern: The pattern's text.
        max_degradation: D, in accuracy units.
        storage: Optuna storage URL holding the ledger of looks at test splits (made if missing).
        baseline: The baseline's text (default ``full``, of the baseline's checkpoint).
        baseline_checkpoint: Checkpoint the baseline adapts (default: the same).
        confidence: Probability that a confirmed pattern is truly within D, across every look.
        test_tasks: Confirmation tasks.
        report_tasks: Report tasks (default: as many as ``test_tasks``).
        test_seed: Seed of the test tasks and of the split of the test characters (3/4 decide, 1/4 report).
        timed_tasks: Report tasks the reported speedup is timed on.
        timed_rounds: Interleaved timing rounds on each of them.
        accept_test_looks: Confirm even when a look that confirmed nothing
            (``evaluate --split test``) scored the split before (recorded as not covered).

    Raises:
        UsageError: Bad arguments, or an earlier look that confirmed nothing.
        CheckpointError: A baseline checkpoint of another benchmark or model.
    """
    settings = ConfirmationSettings(max_degradation, confidence, 1, test_tasks, report_tasks, test_seed, timed_tasks,
                                    timed_rounds, accept_test_looks)
    reference = experiment.with_checkpoint(baseline_checkpoint)
    candidate = CandidateTest(str(experiment.pattern(pattern)), None, None, None,
                              checkpoint=str(experiment.checkpoint_path))
    return confirm_candidates(
        reference, [(candidate, experiment)], settings, ledger=Ledger(open_storage(storage)),
        command="select --pattern", baseline=baseline,
        validation_for=lambda _: ValidationEvidence())


def confirm_candidates(
    reference: Experiment,
    contenders: Sequence[tuple[CandidateTest, Experiment]],
    settings: ConfirmationSettings,
    *,
    validation_for: Callable[[CandidateTest | None], ValidationEvidence],
    ledger: Ledger,
    command: str,
    baseline: str = "full",
) -> Selection:
    """Confirms candidates, each on its own checkpoint, against the baseline on ``reference``; reports the winner.

    A look the ledger would refuse is refused before any scoring, and
    :func:`confirm_look` tests the candidates on the confirmation tasks of
    the test split at the error rate the look may spend; the selected
    candidate (or the baseline when none is confirmed) is then measured on
    the fresh report tasks and timed next to the baseline.

    Args:
        reference: The experiment whose checkpoint the baseline adapts.
        contenders: Fastest first, each candidate with the experiment
            (checkpoint) it adapts; the last is the anchor.
        settings: The promise, the test tasks and the timing.
        validation_for: What validation said of the selected candidate (None: the baseline).
        ledger: The looks at test splits.
        command: What looks, for the ledger (``select``, ``tune``, ...).
        baseline: The baseline's text.

    Raises:
        UsageError: Bad arguments, or an earlier look that confirmed nothing.
    """
    base = reference.pattern(baseline)
    split = reference.benchmark.split_identity("test")
    ledger.check(reference.benchmark, settings.confidence, accept=settings.accept_test_looks)  # before any scoring
    decision_tasks, fresh_tasks, disjoint = disjoint_task_sets(reference.benchmark, "test", settings.test_tasks,
                                                               settings.fresh_tasks, settings.test_seed)
    checksums = {id(e): file_checksum(e.checkpoint_path) for e in [reference, *(e for _, e in contenders)]}
    look = Look(command, reference.benchmark.name, split, look_identity(
        benchmark=reference.benchmark.name, split=split, seed=settings.test_seed, tasks=settings.test_tasks,
        report_tasks=settings.fresh_tasks, baseline=[str(base), checksums[id(reference)]],
        max_degradation=settings.max_degradation, confidence=settings.confidence,
        candidates=[[asdict(c), checksums[id(e)]] for c, e in contenders]),
        unit_names([*decision_tasks, *fresh_tasks], settings.test_seed), tuple(sorted(set(checksums.values()))),
        tuple(c.pattern for c, _ in contenders), confirms=True)
    confirmation = PairedScores(reference, reference, base, [t.to(reference.device) for t in decision_tasks])
    scorers = {candidate: confirmation.on(experiment) for candidate, experiment in contenders}
    decision, spending = confirm_look(
        [candidate for candidate, _ in contenders], lambda c: scorers[c].differences(c.pattern), confirmation.design,
        look, ledger, max_degradation=settings.max_degradation, confidence=settings.confidence,
        accept_test_looks=settings.accept_test_looks)
    winner = next((experiment for candidate, experiment in contenders
                   if decision.selected is not None and candidate.pattern == decision.selected.pattern
                   and candidate.checkpoint == decision.selected.checkpoint), reference)
    pattern = None if decision.selected is None else winner.pattern(decision.selected.pattern)
    fresh, timing = _measured(winner, reference, base, pattern, fresh_tasks, disjoint, settings)
    return Selection(
        str(pattern or base), str(base), settings.max_degradation, settings.confidence,
        confirmed=decision.selected is not None, reason=decision.reason, validation=validation_for(decision.selected),
        confirmation=ConfirmationEvidence(
            decision.candidates, decision.selected.lower_bound if decision.selected else None, settings.test_tasks,
            confirmation.design.distinct_classes(),
            LookSpent(spending.number, spending.level, spending.describe(settings.confidence), spending.earlier,
                      spending.covered)),
        fresh=fresh, timing=timing, device=device_name(winner.device), environment=environment(),
        checkpoint=str(winner.checkpoint_path), baseline_checkpoint=str(reference.checkpoint_path))


def confirm_look(candidates: Sequence[CandidateTest], paired_differences: Callable[[CandidateTest], np.ndarray],
                 design: TaskDesign, look: Look, ledger: Ledger, *, max_degradation: float, confidence: float,
                 accept_test_looks: bool = False) -> tuple[Decision, Spending]:
    """One look at a test split: scored, recorded, then the candidates tested at the error rate it may spend.

    Every candidate's paired differences are computed first (the test
    scores them all anyway) and their checksum recorded with the look: a
    look with an earlier one's identity and the same scores is a repeat and
    spends nothing; other scores make it a new look (see
    :mod:`patternsearch.looks`). The differences decide only after the
    level is chosen. The step ``select``, ``select --pattern`` and ``tune``
    share (through :func:`confirm_candidates`); the error-rate simulations
    call it with fabricated differences.

    Args:
        candidates: Fastest first; the last is the anchor.
        paired_differences: A candidate's per-task differences to the baseline on the confirmation tasks.
        design: The confirmation tasks' design.
        look: The look, for the ledger (its ``split`` and ``identity``).
        ledger: The looks at test splits.
        max_degradation: D, in accuracy units.
        confidence: Family-wise confidence across every look at the split.
        accept_test_looks: Confirm despite an earlier look that confirmed nothing.

    Raises:
        UsageError: The ledger refuses the look (see :meth:`~patternsearch.looks.Ledger.spend`) and
            ``accept_test_looks`` is False.
    """
    scored: dict[int, np.ndarray | AdaptationDiverged] = {}
    for candidate in candidates:
        try:
            scored[id(candidate)] = np.asarray(paired_differences(candidate), dtype=np.float64)
        except AdaptationDiverged as error:  # the test sees it as it would have
            scored[id(candidate)] = error
    checksum = scores_checksum([np.array([]) if isinstance(v, AdaptationDiverged) else v for v in scored.values()])
    spending = ledger.spend(replace(look, scores=checksum), confidence, accept_scored=accept_test_looks)

    def differences(candidate: CandidateTest) -> np.ndarray:
        found = scored[id(candidate)]
        if isinstance(found, AdaptationDiverged):
            raise found
        return found

    decision = confirm_in_sequence(candidates, differences, design, max_degradation=max_degradation,
                                   confidence=1.0 - spending.level)
    return decision, spending


def _measured(experiment: Experiment, reference: Experiment, baseline: Pattern, pattern: Pattern | None,
              fresh_tasks: Sequence[Task], disjoint: bool,
              settings: ConfirmationSettings) -> tuple[FreshReport, DeploymentTiming]:
    """Accuracies on the fresh report tasks and the timing next to the baseline (same model: same cost).

    ``pattern`` is the confirmed candidate (adapted on ``experiment``'s
    checkpoint), or None when the baseline is the answer.
    """
    fresh = [t.to(experiment.device) for t in fresh_tasks]
    report = PairedScores(experiment, reference, baseline, fresh)
    baseline_scores = report.baseline_scores()
    scores = baseline_scores if pattern is None else report.candidate_scores(pattern)
    timing = deployment_timing(experiment.model, baseline if pattern is None else pattern, baseline,
                               experiment.inner_lr, experiment.benchmark.loss_fn, fresh[:settings.timed_tasks],
                               experiment.device, repeats=settings.timed_rounds)
    design = report.design
    return FreshReport.of(estimate(scores, design), estimate(baseline_scores, design),
                          estimate(scores - baseline_scores, design), classes_disjoint=disjoint,
                          test_seed=settings.test_seed), timing
