"""``optimize``: the multi-objective pattern search, stored in a database and resumable."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from ..checkpoint import file_checksum, load_checkpoint
from ..devices import resolve_device
from ..errors import StorageError, UsageError
from ..experiment import Experiment, build_benchmark, checkpoint_path, open_experiment
from ..measurement import PatternEvaluator, Rival, environment, timing_noise
from ..pattern import Pattern
from ..spec import ExperimentSpec
from ..training import ensure_checkpoint
from ._config import CONFIG_ATTR, ENVIRONMENT_ATTR, TARGET_ATTR, TIME_METRICS, StudyConfig, differences
from ._pareto import SelectionError, completed_trials, counts_toward_target, measured, stopped_early, validation_choice
from ._samplers import DEFAULT_SAMPLER, SAMPLERS, make_sampler
from ._space import DEFAULT_MAX_PHASES, SearchSpace
from ._storage import DEFAULT_HEARTBEAT_S, DEFAULT_STORAGE, creation_lock, open_storage

MAX_CONSECUTIVE_FAILURES = 20
_FAILURES = (FloatingPointError, torch.OutOfMemoryError)


def default_study_name(benchmark: str, model: str, ways: int, shots: int) -> str:
    """``<benchmark>-<model>-<ways>w<shots>s``."""
    return f"{benchmark}-{model}-{ways}w{shots}s"


def _validate(trials: int, tasks: int, time_metric: str, sampler: str, latency_tasks: int, repeats: int) -> None:
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    if tasks < 1:
        raise UsageError(f"--tasks must be at least 1, got {tasks}")
    if time_metric not in TIME_METRICS:
        raise UsageError(f"unknown --time-metric {time_metric!r}; choose from {', '.join(TIME_METRICS)}")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if latency_tasks < 1 or repeats < 1:
        raise UsageError("--latency-tasks and --repeats must be at least 1")


def _prepare_study(storage: optuna.storages.BaseStorage, name: str, config: StudyConfig, baseline: Pattern,
                   target: int, say: Callable[[str], None]) -> optuna.Study:
    """Creates the study with the baseline enqueued, or loads it (refusing another configuration).

    Only the worker whose ``create_study`` succeeds (the database's unique
    study name decides) records the configuration and enqueues the baseline,
    so workers that start at once enqueue it once; the others wait for the
    configuration. The study's target only grows: a smaller ``target`` is
    this worker's own stopping point, and it says so.
    """
    sampler = make_sampler(config.sampler, config.sampler_seed)
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "maximize"],
                                    sampler=sampler)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = not _wait_for_configuration(study)  # else its creator died before recording it: take over
    if created:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"time_{config.time_metric}", "accuracy"])
        study.set_user_attr(CONFIG_ATTR, config.as_dict())
        study.set_user_attr(ENVIRONMENT_ATTR, environment())  # every trial records its own too
        study.enqueue_trial(config.search_space().params(baseline), skip_if_exists=True)
    else:
        found = config.differences(study.user_attrs[CONFIG_ATTR])
        if found:
            raise UsageError(f"study {name!r} was created with another configuration: {'; '.join(found)}; "
                             "use another --study name or the same settings")
    stored = study.user_attrs.get(TARGET_ATTR)
    if stored is None or target > stored:
        study.set_user_attr(TARGET_ATTR, target)
    elif target < stored:
        say(f"study {name!r} keeps its target of {stored} trials (set by an earlier run); this run stops at "
            f"{target}")
    return study


def _wait_for_configuration(study: optuna.Study, seconds: float = 30.0) -> bool:
    """Waits until the study's creator has recorded its configuration; False if it never does."""
    deadline = time.monotonic() + seconds
    while CONFIG_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
        study = optuna.load_study(study_name=study.study_name, storage=study._storage)
    return True


class _DatabaseTrials:
    """Trials read straight from the database, for the counts that must be exact.

    Optuna's per-process trial cache skips a trial whose row commits after a
    finished trial with a larger id, which PostgreSQL and MySQL allow (ids are
    handed out before commit); a retry enqueued then would never be run.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self.storage, self.study_id = storage, storage.get_study_id_from_name(study_name)

    def __call__(self, *states: TrialState) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def finished_or_running(self) -> list[FrozenTrial]:
        """Trials that count toward the target (complete, or stopped early) and the running ones."""
        trials = self(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return [t for t in trials if t.state == TrialState.RUNNING or counts_toward_target(t)]

    def counts(self) -> tuple[int, list[FrozenTrial]]:
        """Trials that count toward the target, and the running ones."""
        trials = self.finished_or_running()
        running = [t for t in trials if t.state == TrialState.RUNNING]
        return len(trials) - len(running), running

    def is_surplus(self, trial: optuna.Trial, target: int) -> bool:
        """True when other workers already hold the target number of trials ahead of this one."""
        return sum(t.number < trial.number for t in self.finished_or_running()) >= target

    def retire_waiting_retries(self) -> None:
        """Marks the retries still waiting once the target is reached as surplus (pruned): none waits forever.

        SQLite cannot lock a row, so two workers that find the same dead
        worker's trial stale may both fail it, and the storage then enqueues
        its retry twice; the second copy would be left waiting. Trials a user
        enqueued are kept for a later, larger target.
        """
        for trial in self(TrialState.WAITING):
            if "failed_trial" not in trial.system_attrs:
                continue
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.storage.set_trial_user_attr(trial._trial_id, "surplus", True)
                self.storage.set_trial_state_values(trial._trial_id, TrialState.PRUNED)

    def rivals(self, tasks: int) -> list[Rival]:
        """Every fully scored pattern (first trial of each), as a rival for early stopping."""
        return [Rival(t.number, t.values[0], np.asarray(measured(t).scores, dtype=float))
                for t in self(TrialState.COMPLETE)
                if "repeat_of" not in t.user_attrs and measured(t).tasks_scored == tasks]


def fail_stale_trials(study: optuna.Study) -> None:
    """Fails trials whose worker stopped sending heartbeats; the storage's callback enqueues their retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def best_speedup_within(study: optuna.Study, degradation: float = 0.01) -> float | None:
    """Speedup of the pattern ``select`` would choose at ``degradation``, or None before the baseline."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mixed-device warning belongs to select, not to progress
            return measured(validation_choice(study, degradation).selected).speedup
    except SelectionError:
        return None


class _Objective:
    """Evaluates one trial; repeats of an evaluated pattern reuse its values (or its early stop)."""

    def __init__(self, trials: _DatabaseTrials, evaluator: PatternEvaluator, config: StudyConfig, target: int,
                 early_stopping: bool) -> None:
        self.trials, self.evaluator, self.config, self.target = trials, evaluator, config, target
        self.space, self.early_stopping = config.search_space(), early_stopping

    def _previous(self, trial: optuna.Trial, pattern: Pattern) -> FrozenTrial | None:
        """An evaluated trial of the same pattern; waits while another worker is evaluating it."""
        while True:
            same = [t for t in self.trials.finished_or_running()
                    if t.user_attrs.get("pattern") == str(pattern) and "repeat_of" not in t.user_attrs
                    and t.number != trial.number]
            done = [t for t in same if t.state != TrialState.RUNNING]
            if done:
                return done[0]
            if not any(t.number < trial.number for t in same):
                return None
            time.sleep(0.5)  # an earlier trial is measuring this pattern right now
            fail_stale_trials(trial.study)  # unless its worker died

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        if self.trials.is_surplus(trial, self.target):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the target number of trials is already complete or running")
        pattern = self.space.suggest(trial)
        trial.set_user_attr("pattern", str(pattern))
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")
        previous = self._previous(trial, pattern)
        if previous is not None:
            for key, value in previous.user_attrs.items():
                if key not in ("worker", "pattern"):
                    trial.set_user_attr(key, value)
            trial.set_user_attr("repeat_of", previous.number)
            if stopped_early(previous):
                raise optuna.TrialPruned(f"{pattern} was stopped early in trial {previous.number}")
            return previous.values[0], previous.values[1]
        early = self.early_stopping and pattern != self.evaluator.baseline  # select needs the baseline's scores
        rivals = self.trials.rivals(self.config.tasks) if early else None
        try:
            measurement = self.evaluator.measure(pattern, rivals, self.config.time_metric)
        except _FAILURES as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
            raise
        for key, value in measurement.user_attrs().items():
            trial.set_user_attr(key, value)
        if measurement.dominated_by is not None:
            raise optuna.TrialPruned(f"{pattern} stopped after {measurement.tasks_scored} tasks: trial "
                                     f"{measurement.dominated_by} is faster and surely more accurate")
        return measurement.time_objective(self.config.time_metric), measurement.accuracy


def optimize(
    trials: int = 200,
    spec: ExperimentSpec | None = None,
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    tasks: int = 200,
    task_seed: int = 0,
    max_steps: int = 10,
    space: str = "flags",
    max_phases: int | None = None,
    search_lr: bool = False,
    sampler: str = DEFAULT_SAMPLER,
    seed: int = 0,
    baseline: str = "full",
    time_metric: str = "ratio",
    latency_tasks: int = 2,
    repeats: int = 3,
    train_iterations: int | None = None,
    early_stopping: bool = True,
    heartbeat_interval: int = DEFAULT_HEARTBEAT_S,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Searches Lambda patterns until the study holds ``trials`` evaluated trials.

    ``trials`` is the study's total target, not a number of new trials: an
    interrupted run resumes where it stopped, a finished study returns at
    once, and a larger target extends it. The first trial is the baseline.
    A request that the existing study would refuse (another configuration)
    is refused before any data is loaded or any checkpoint trained.

    Args:
        trials: Target number of evaluated trials (complete or stopped early).
        spec: Benchmark, model, episode shape, data, checkpoint and device
            (default: the shipped omniglot-small conv4 5-way 1-shot); a
            missing checkpoint is meta-trained first.
        storage: Optuna storage URL.
        study_name: Default ``<benchmark>-<model>-<ways>w<shots>s``.
        tasks: Fixed validation tasks every trial is scored on.
        task_seed: Seed of those tasks.
        max_steps: Largest inner-step count searched (all phases together).
        space: ``flags`` (one set of flags for every step, the default) or
            ``phases`` (flags that change between phases).
        max_phases: Largest number of phases (``phases`` only; default 2).
        search_lr: Also search a scale of the inner learning rate per phase.
        sampler: One of :data:`SAMPLERS`.
        seed: Sampler seed.
        baseline: Baseline pattern (default ``full``).
        time_metric: ``ratio`` (default), ``latency`` or ``flops``.
        latency_tasks: Tasks timed per trial.
        repeats: Timed rounds per task.
        train_iterations: Meta-training iterations if a checkpoint is trained.
        early_stopping: Stop scoring a pattern once a faster trial is surely
            more accurate (the trial is PRUNED, with its partial scores and
            the winner in its user attributes; it counts toward the target).
        heartbeat_interval: Seconds between heartbeats of running trials.
        progress: Show progress bars.
        log: Where messages go (default: standard error).

    Returns:
        The Optuna study.

    Raises:
        UsageError: Bad settings, or settings the existing study was not made with.
    """
    spec = spec or ExperimentSpec()
    say = log or (lambda message: print(message, file=sys.stderr))
    _validate(trials, tasks, time_metric, sampler, latency_tasks, repeats)
    if max_phases is None:
        max_phases = DEFAULT_MAX_PHASES if space == "phases" else 1
    SearchSpace(1, max_steps, space, max_phases, search_lr)  # validates before anything loads
    requested: dict[str, Any] = {
        "ways": spec.ways, "shots": spec.shots, "queries": spec.queries, "tasks": tasks, "task_seed": task_seed,
        "max_steps": max_steps, "sampler": sampler, "sampler_seed": seed, "time_metric": time_metric,
        "latency_tasks": latency_tasks, "repeats": repeats, "device": resolve_device(spec.device).type,
        "benchmark_options": dict(spec.benchmark_options), "space": space, "max_phases": max_phases,
        "search_lr": search_lr,
    }
    if study_name:  # the study is known: refuse before the data loads
        _refuse_early(storage, study_name, requested)
    bench = build_benchmark(spec)
    path = checkpoint_path(spec, bench)
    model = spec.model or (load_checkpoint(path).model if path.is_file() else bench.default_model)
    name = study_name or default_study_name(bench.name, model, spec.ways, spec.shots)
    if _refuse_early(storage, name, {**requested, "benchmark": bench.name, "model": model}) and not path.is_file():
        raise UsageError(f"study {name!r} was made with a checkpoint that is not at {path}; pass --checkpoint "
                         "(a new one would be trained otherwise, and the study would refuse it)")
    path = ensure_checkpoint(spec, benchmark=bench, iterations=train_iterations, progress=progress, log=say)
    experiment = open_experiment(spec.but(checkpoint=str(path)), benchmark=bench)
    baseline_pattern = experiment.pattern(baseline).canonical()
    if baseline_pattern.steps > max_steps:
        raise UsageError(f"the baseline {baseline_pattern} uses {baseline_pattern.steps} steps; "
                         f"--max-steps must be at least that")
    config = study_config(experiment, baseline_pattern, tasks=tasks, task_seed=task_seed, max_steps=max_steps,
                          sampler=sampler, seed=seed, time_metric=time_metric, latency_tasks=latency_tasks,
                          repeats=repeats, space=space, max_phases=max_phases, search_lr=search_lr)
    with creation_lock(storage):
        rdb = open_storage(storage, heartbeat_interval=max(1, heartbeat_interval))
        study = _prepare_study(rdb, name, config, baseline_pattern, trials, say)
    database_trials = _DatabaseTrials(rdb, name)
    done, _ = database_trials.counts()
    if done >= trials:
        database_trials.retire_waiting_retries()
        say(f"study {name!r} already has {done} evaluated trials (target {trials}); nothing to do")
        return study
    say(f"study {name!r}: {done}/{trials} evaluated; space {config.search_space().describe()}; scoring on {tasks} "
        f"validation tasks ({experiment.device.type})")
    evaluator = PatternEvaluator(experiment, baseline_pattern, experiment.tasks("val", tasks, task_seed),
                                 latency_tasks=latency_tasks, repeats=repeats)
    _run(study, _Objective(database_trials, evaluator, config, trials, early_stopping), trials,
         heartbeat_interval, progress, say)
    return optuna.load_study(study_name=name, storage=rdb, sampler=study.sampler)


def _refuse_early(storage: str, name: str, requested: dict[str, Any]) -> bool:
    """Refuses settings that the stored study ``name`` differs in, reading only the database.

    Returns:
        Whether the study exists.

    Raises:
        UsageError: The differences, one line.
    """
    try:
        rdb = open_storage(storage, create=False)
        study_id = rdb.get_study_id_from_name(name)
    except (StorageError, KeyError):
        return False  # no database or no such study yet: nothing to refuse
    stored = rdb.get_study_user_attrs(study_id).get(CONFIG_ATTR)
    found = differences(stored, requested) if stored is not None else []
    if found:
        raise UsageError(f"study {name!r} was created with another configuration: {'; '.join(found)}; "
                         "use another --study name or the same settings")
    return True


def study_config(experiment: Experiment, baseline: Pattern, *, tasks: int, task_seed: int, max_steps: int,
                 sampler: str, seed: int, time_metric: str, latency_tasks: int, repeats: int, space: str = "flags",
                 max_phases: int = 1, search_lr: bool = False) -> StudyConfig:
    """The configuration a study of ``experiment`` records."""
    return StudyConfig(
        benchmark=experiment.benchmark.name, model=experiment.checkpoint.model,
        ways=experiment.ways, shots=experiment.shots, queries=experiment.queries,
        checkpoint_sha256=file_checksum(experiment.checkpoint_path), inner_lr=experiment.inner_lr,
        groups=tuple(g.name for g in experiment.groups), baseline=str(baseline), task_seed=task_seed, tasks=tasks,
        max_steps=max_steps, sampler=sampler, sampler_seed=seed, time_metric=time_metric,
        latency_tasks=latency_tasks, repeats=repeats, device=experiment.device.type,
        benchmark_options=dict(experiment.benchmark_options), mode=experiment.checkpoint.mode,
        space=space, max_phases=max_phases, search_lr=search_lr,
    )


def _run(study: optuna.Study, objective: _Objective, target: int, heartbeat_interval: int, progress: bool,
         say: Callable[[str], None]) -> None:
    complete, _ = objective.trials.counts()
    bar = tqdm(total=target, initial=complete, desc="searching", unit="trial", disable=not progress,
               dynamic_ncols=True)
    failures, waiting_said, noise_said = 0, False, False
    try:
        while True:
            complete, running = objective.trials.counts()
            bar.n = complete
            best = best_speedup_within(study)
            bar.set_postfix_str(f"estimated (validation) speedup within 1 pt: {best:.1f}x" if best else
                                "baseline first")
            noise = None if noise_said else timing_noise(
                [measured(t).baseline_latency_ms for t in completed_trials(study)], where="between trials")
            if noise:
                bar.write(f"patternsearch: warning: {noise}")
                noise_said = True
            if complete >= target:
                objective.trials.retire_waiting_retries()
                break
            if complete + len(running) >= target:
                if not waiting_said:
                    say(f"waiting for {len(running)} running trial(s) of other workers; a trial whose worker died "
                        f"is retried after {3 * heartbeat_interval}s without heartbeat")
                    waiting_said = True
                fail_stale_trials(study)
                time.sleep(min(1.0, heartbeat_interval / 2))
                continue
            # A fresh cache per trial: Optuna's would never see a retry that committed late.
            study = optuna.load_study(study_name=study.study_name, storage=objective.trials.storage,
                                      sampler=study.sampler)
            finished: list[FrozenTrial] = []
            try:
                study.optimize(objective, n_trials=1, catch=_FAILURES, gc_after_trial=False,
                               show_progress_bar=False, callbacks=[lambda _, trial, into=finished: into.append(trial)])
            except ValueError as error:
                # SQLite cannot lock a row: two workers may pop the same retried (WAITING) trial, and the
                # second to finish it cannot tell it. Its result is already in the study.
                if not str(error).startswith("Cannot tell a"):
                    raise
                say(f"another worker finished the same retried trial first ({error}); going on")
                continue
            failures = failures + 1 if finished[-1].state == TrialState.FAIL else 0
            if failures >= MAX_CONSECUTIVE_FAILURES:
                last = finished[-1]
                reason = last.user_attrs.get("fail_reason") or last.system_attrs.get("fail_reason", "unknown")
                raise UsageError(f"{failures} trials failed in a row (last: {reason}); check the inner learning rate")
    finally:
        bar.refresh()
        bar.close()
