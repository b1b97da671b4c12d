"""One process's part of a tuning: the plan's measurements, the units it runs, the confirmation's contenders.

Every worker opens a :class:`TuningSession` on the parent; the one that makes the plan times the candidates,
each unit specializes and scores one candidate, and the one that confirms assembles the contenders
(:func:`tune_contenders`) from the plan and the units' results alone, so any worker, or a rerun, decides alike.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import optuna

from ..benchmarks import Benchmark
from ..confirmation import CandidateTest, new_group_gap, winners_curse_corrected
from ..errors import UsageError, one_line
from ..experiment import Experiment
from ..looks import Ledger
from ..measurement import CachedScorer, adaptation_call, interleaved_latencies
from ..pattern import Pattern
from ..search import (
    CONFIG_ATTR,
    REPORT_TIMED_ROUNDS,
    REPORT_TIMED_TASKS,
    Selection,
    StudyConfig,
    ValidationEvidence,
    completed_trials,
    confirm_candidates,
    measured,
    study_candidates,
    study_front,
)
from ..training import meta_update_times, specialize
from ..uncertainty import TaskDesign, estimate
from ._plan import (
    Plan,
    PlannedCandidate,
    TuneConfig,
    rungs_for,
    validation_lower_bound,
)
from ._schedule import format_duration, smallest_budget, within_weighted_speedup
from ._units import UnitResult

_TIMED_VALIDATION_TASKS = 10
"""Validation tasks timed to plan a rung's fixed cost (scaled to all of them)."""


_TIMED_PER_CANDIDATE = 3
"""Patterns of the front's fast end timed when planning, per candidate to choose."""


def checkpoint_name(pattern: str) -> str:
    """A file name for a pattern's specialized checkpoint: ``00010:1`` -> ``00010-1.pt``."""
    return re.sub(r"[^0-9A-Za-z.]+", "-", pattern).strip("-") + ".pt"


class TuningSession:
    """One process's view of the tuning: the parent, the validation tasks and the baseline's scores on them."""

    def __init__(self, config: TuneConfig, study: optuna.Study, parent: Experiment, data_root: str | None,
                 say: Callable[[str], None], progress: bool) -> None:
        self.config, self.study, self.parent, self.say, self.progress = config, study, parent, say, progress
        self.data_root = data_root
        self.study_config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
        self.tasks = [t.to(parent.device) for t in parent.tasks("val", config.val_tasks, config.train_seed)]
        self.design = TaskDesign.of(self.tasks)

    @cached_property
    def baseline_scores(self) -> np.ndarray:
        """Full MAML on the parent, on the tuning's validation tasks."""
        scorer = CachedScorer(self.parent.model, self.parent.benchmark, self.tasks, self.parent.inner_lr)
        return scorer.scores(self.parent.pattern(self.study_config.baseline))

    @cached_property
    def study_validation(self) -> TaskDesign:
        """The design of the study's own validation tasks (what its proposals rest on)."""
        return TaskDesign.of(self.parent.tasks("val", self.study_config.tasks, self.study_config.task_seed))

    def plan(self) -> Plan:
        """The candidates (the fast end of the validation front at D + margin), their speedups and their costs."""
        config = self.config
        front = [c for c in study_front(self.study, self.study_validation,
                                        max_degradation=config.max_degradation + config.margin,
                                        confidence=config.confidence)
                 if c.pattern != self.study_config.baseline][:_TIMED_PER_CANDIDATE * config.candidates]
        own = self.own_candidates()
        speedups = self.measured_speedups([c.pattern for c in front] + [c.pattern for c in own])
        self.say("speedups timed on the parent (the study's estimates in brackets): " + ", ".join(
            f"{c.pattern} {speedups[c.pattern]:.1f}x ({c.val_speedup or 0.0:.1f}x)" for c in front))
        chosen = sorted(front, key=lambda c: -speedups[c.pattern])[:config.candidates]
        meta_batch = int(self.parent.checkpoint.config.get("meta_batch") or 1)
        first_order = bool(self.parent.checkpoint.config.get("first_order", False))
        self.say(f"timing one meta-update of each of {len(chosen)} candidates (meta-batch {meta_batch})")
        patterns = [self.parent.pattern(c.pattern) for c in chosen]
        times = meta_update_times(self.parent.model, self.parent.benchmark, patterns, self.parent.inner_lr,
                                  meta_batch=meta_batch, first_order=first_order, device=self.parent.device)
        sampling = _sampling_seconds(self.parent.benchmark, meta_batch, config.train_seed)
        planned = tuple(PlannedCandidate(
            pattern=c.pattern, speedup=speedups[c.pattern], val_difference=float(c.val_difference or 0.0),
            val_corrected=float(c.val_corrected if c.val_corrected is not None else math.nan),
            seconds_per_iteration=times[str(p)].median_ms / 1000.0 + sampling,
            checkpoint=os.fspath(Path(config.out) / checkpoint_name(c.pattern)),
            seconds_per_unit=self.unit_seconds(p), study_speedup=float(c.val_speedup or 0.0))
            for c, p in zip(chosen, patterns, strict=True))
        rungs = rungs_for(config, len(planned))
        smallest = smallest_budget(rungs, [c.seconds_per_unit + c.seconds_per_iteration for c in planned])
        if config.budget_s < smallest:
            raise UsageError(f"--budget {format_duration(config.budget_s)} does not cover the fixed costs of "
                             f"{len(planned)} candidates in {len(rungs)} rungs (each rung's share must pay a "
                             f"validation and one meta-update of each candidate in it): the smallest budget that "
                             f"works is {format_duration(math.ceil(smallest))}, or use fewer --candidates")
        parent_candidates = tuple(asdict(replace(c, checkpoint=str(self.parent.checkpoint_path),
                                                 val_speedup=speedups.get(c.pattern, c.val_speedup))) for c in own)
        return Plan(planned, rungs, speedups, parent_candidates)

    def own_candidates(self) -> list[CandidateTest]:
        """The parent's own candidates at D: what ``select`` would test (the safe fallback)."""
        config = self.config
        return study_candidates(self.study, self.study_validation, max_degradation=config.max_degradation,
                                confidence=config.confidence, max_candidates=config.max_confirmed)

    def measured_speedups(self, patterns: Sequence[str]) -> dict[str, float]:
        """Each pattern's speedup over the baseline on the parent, timed interleaved on a few validation tasks."""
        parent, baseline = self.parent, self.study_config.baseline
        names = list(dict.fromkeys([baseline, *patterns]))
        variants = {name: adaptation_call(parent.model, parent.pattern(name), parent.inner_lr,
                                          parent.benchmark.loss_fn) for name in names}
        stats = interleaved_latencies(variants, self.tasks[:REPORT_TIMED_TASKS], parent.device,
                                      repeats=REPORT_TIMED_ROUNDS)
        return {name: stats[name].speedup_over(stats[baseline]) for name in names if name != baseline}

    def unit_seconds(self, pattern: Pattern) -> float:
        """A rung's fixed cost on one candidate: two validations (training's, ranking's), timed on a few tasks."""
        sample = self.tasks[:_TIMED_VALIDATION_TASKS]
        began = time.perf_counter()
        CachedScorer(self.parent.model, self.parent.benchmark, sample, self.parent.inner_lr).scores(pattern)
        return 2.0 * (time.perf_counter() - began) * len(self.tasks) / len(sample)

    def run_unit(self, plan: Plan) -> Callable[[int, int, int], UnitResult]:
        """The function that specializes candidate ``c`` to the end of ``rung`` and measures it on validation."""
        config = self.config

        def run(rung: int, slot: int, candidate: int) -> UnitResult:
            planned = plan.candidates[candidate]
            target = plan.target(config, candidate, rung)
            added = target - (plan.target(config, candidate, rung - 1) if rung else 0)
            expected = added * planned.seconds_per_iteration + planned.seconds_per_unit
            self.say(f"rung {rung + 1}/{len(plan.rungs)}, candidate {planned.pattern}: specializing to {target} "
                     f"meta-updates (~{format_duration(expected)} for this rung)")
            began = time.perf_counter()
            try:  # the unit scores the candidate once, below: the training does not validate (val_every=0)
                special = specialize(self.parent.checkpoint_path, planned.pattern, target, planned.checkpoint,
                                     seed=config.train_seed, val_every=0, val_tasks=config.val_tasks,
                                     data_root=self.data_root, device=self.parent.device.type,
                                     benchmark=self.parent.benchmark, progress=self.progress)
                done = int(special.training.get("iteration", target))
                if done != target:
                    self.say(f"  {planned.checkpoint} already held {done} meta-updates, more than this rung's "
                             f"{target}: it was not made by this tuning; its numbers are those of {done}")
                result = self.measure(planned, rung, candidate, done)
            except FloatingPointError as error:  # dropped with its reason; the same seed would diverge again
                self.say(f"  {planned.pattern} dropped: {one_line(error)}")
                result = UnitResult.dropped(rung, candidate, target, 0.0, one_line(error))
            return replace(result, seconds=time.perf_counter() - began)  # meta-training and validation

        return run

    def measure(self, planned: PlannedCandidate, rung: int, candidate: int, iterations: int) -> UnitResult:
        """A specialized candidate's paired validation difference to the baseline, and its within-weighted speedup."""
        special = self.parent.with_checkpoint(planned.checkpoint)
        scores = CachedScorer(special.model, special.benchmark, self.tasks, special.inner_lr).scores(
            special.pattern(planned.pattern))
        differences = scores - self.baseline_scores
        difference = estimate(differences, self.design)
        gap = new_group_gap(differences, self.design.groups, difference.standard_error, self.config.confidence)
        score = within_weighted_speedup(planned.speedup, difference.mean + gap, difference.standard_error,
                                        self.config.max_degradation)
        self.say(f"  {planned.pattern} after {iterations} meta-updates: validation difference "
                 f"{difference.mean:+.4f} +/- {difference.ci95:.4f}"
                 + (f" (a new group may lie {-gap:.4f} lower)" if gap < 0.0 else "")
                 + f", within-weighted speedup {score:.1f}x")
        return UnitResult(rung=rung, candidate=candidate, iterations=iterations, val_difference=difference.mean,
                          val_standard_error=difference.standard_error, val_accuracy=float(np.mean(scores)),
                          score=score, seconds=0.0, val_group_gap=gap)

    def confirm(self, plan: Plan, results: Sequence[UnitResult], ledger: Ledger, *,
                accept_test_looks: bool) -> Selection:
        """The specialized candidates validation supports and the parent's own, confirmed on the test split.

        The look is recorded in ``ledger`` and spends its share of the error rate (see :mod:`patternsearch.looks`).
        """
        config, parent = self.config, self.parent
        parent_path = str(parent.checkpoint_path)
        contenders = [(test, parent.with_checkpoint(test.checkpoint))
                      for test in tune_contenders(plan, results, config)]
        self.say(f"confirming {len(contenders)} candidates against {self.study_config.baseline} on the parent, on "
                 f"{config.test_tasks} test tasks: " + ", ".join(
                     test.pattern + ("" if test.checkpoint == parent_path else " (specialized)")
                     for test, _ in contenders))
        trials = {t.number: t for t in completed_trials(self.study)}

        def validation_for(selected: CandidateTest | None) -> ValidationEvidence:
            trial = trials.get(selected.trial) if selected is not None and selected.trial is not None else None
            return ValidationEvidence(config.search_study, None if trial is None else trial.number,
                                      None if trial is None else measured(trial).accuracy, None,
                                      None if selected is None else selected.val_speedup)

        return confirm_candidates(parent, contenders, config.confirmation(accept_test_looks),
                                  validation_for=validation_for, ledger=ledger, command="tune",
                                  baseline=self.study_config.baseline)


def tune_contenders(plan: Plan, results: Sequence[UnitResult], config: TuneConfig) -> list[CandidateTest]:
    """What ``tune`` confirms, fastest first (the last is the anchor), from its plan and its units' results.

    Every specialized candidate whose validation lower bound after its last rung is within D, and the parent's
    own candidates frozen in the plan (not the parent's version of a pattern whose specialized version passed:
    it would only take a share of the error rate); at most ``max_confirmed``: the fastest and the slowest.
    The specialized candidates' validation differences are corrected as the parent's proposals are
    (:func:`~patternsearch.confirmation.validation_front`): for the winner's curse, since successive halving
    ranked them on the same tasks (the spread of every candidate's last result sets its size), and by how far a
    new unit group may lie below them (the gap each unit measured).
    """
    contenders = []
    finals = {index: result for index, result in sorted(_final_results(results).items())
              if math.isfinite(result.val_difference)}
    compared = np.array([result.val_difference for result in finals.values()])
    errors = [result.val_standard_error for result in finals.values() if math.isfinite(result.val_standard_error)]
    typical = float(np.median(errors)) if errors else 0.0
    for index, result in finals.items():
        planned = plan.candidates[index]
        corrected = result.val_group_gap + (
            winners_curse_corrected(result.val_difference, result.val_standard_error, compared, typical)
            if math.isfinite(result.val_standard_error) else result.val_difference)
        bound = validation_lower_bound(corrected, result.val_standard_error, config.confidence)
        if bound >= -config.max_degradation:
            contenders.append(CandidateTest(planned.pattern, None, result.val_difference, planned.speedup,
                                            val_corrected=corrected, val_lower_bound=bound,
                                            val_standard_error=result.val_standard_error,
                                            checkpoint=planned.checkpoint))
    specialized = {test.pattern for test in contenders}
    contenders += [CandidateTest(**c) for c in plan.parent_candidates if c["pattern"] not in specialized]
    contenders.sort(key=lambda test: -(test.val_speedup or 0.0))  # stable: specialized first at equal speed
    if len(contenders) > config.max_confirmed:
        contenders = contenders[:config.max_confirmed - 1] + contenders[-1:]
    return contenders


def _sampling_seconds(benchmark: Benchmark, meta_batch: int, seed: int, batches: int = 4) -> float:
    """The time to draw one meta-batch of training tasks (not in :func:`meta_update_times`)."""
    source = benchmark.split("train")
    began = time.perf_counter()
    for index in range(batches * meta_batch):
        source.task(index, seed)
    return (time.perf_counter() - began) / batches


def _final_results(results: Sequence[UnitResult]) -> dict[int, UnitResult]:
    """Each candidate's result after its last rung."""
    final: dict[int, UnitResult] = {}
    for result in sorted(results, key=lambda r: r.rung):
        final[result.candidate] = result
    return final
