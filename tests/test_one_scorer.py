"""Every command computes an accuracy through the same scorer: same pattern, same tasks, same number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from patternsearch.benchmarks import disjoint_task_sets
from patternsearch.experiment import open_experiment
from patternsearch.measurement import PatternEvaluator, bench
from patternsearch.report import full_by_steps
from patternsearch.search import CONFIG_ATTR, StudyConfig, optimize, select

from .conftest import SINUSOID

TINY = dict(tasks=12, latency_tasks=1, repeats=1, progress=False, heartbeat_interval=2, max_steps=10)


def _evaluate(experiment, pattern: str, tasks) -> float:  # type: ignore[no-untyped-def]
    """What ``patternsearch evaluate`` computes."""
    evaluator = PatternEvaluator(experiment, experiment.full, tasks, latency_tasks=1, repeats=1)
    return evaluator.measure(experiment.pattern(pattern)).accuracy


def test_evaluate_optimize_select_report_and_bench_agree(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optimize(5, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, **TINY)
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    val = experiment.tasks("val", config.tasks, config.task_seed)

    # optimize: every complete trial's validation accuracy
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert trial.user_attrs["accuracy"] == pytest.approx(_evaluate(experiment, trial.user_attrs["pattern"], val),
                                                             abs=1e-12)
    # report: full MAML at every step count on the validation tasks
    for steps, numbers in full_by_steps(study, config, data_root=None, checkpoint=sinusoid_checkpoint,
                                        device="cpu").items():
        assert numbers["accuracy"] == pytest.approx(_evaluate(experiment, f"111:{steps}", val), abs=1e-12)
    # select: the reported accuracies on the fresh test tasks
    result = select(1.0, storage=storage, test_tasks=6, report_tasks=5, checkpoint=sinusoid_checkpoint,
                    device="cpu")
    _, fresh, _ = disjoint_task_sets(experiment.benchmark, "test", 6, 5, 0)
    assert result.fresh.accuracy == pytest.approx(_evaluate(experiment, result.pattern, fresh), abs=1e-12)
    assert result.fresh.baseline_accuracy == pytest.approx(_evaluate(experiment, "full", fresh), abs=1e-12)
    # bench: every timed variant on its tasks
    rows = bench(experiment, [experiment.pattern("011:2"), experiment.pattern("001:3")], val[:4], repeats=1,
                 warmup=0)
    for row in rows:
        assert row.accuracy == pytest.approx(_evaluate(experiment, row.pattern, val[:4]), abs=1e-12)
    assert np.isfinite([row.accuracy for row in rows]).all()
