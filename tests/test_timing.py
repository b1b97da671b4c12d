from __future__ import annotations

from pathlib import Path

import pytest

from patternsearch.experiment import open_experiment
from patternsearch.measurement import PLAIN_PATH, LatencyStats, PatternEvaluator, _meter, bench, deployment_timing

from .conftest import SINUSOID


def test_latency_ratio_pairs_samples_so_a_burst_of_load_cancels(sinusoid_checkpoint: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The pattern costs a tenth of the baseline. A burst of load slows four pairs fourfold, and it starts
    between the two samples of one pair. The ratio of the medians then says 40x; the paired ratios say 10x."""
    baseline = (10.0, 10.0, 40.0, 40.0, 40.0, 40.0, 10.0)
    pattern = (1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 1.0)

    def fake(variants, tasks, device, *, repeats):  # type: ignore[no-untyped-def]
        assert set(variants) == {"baseline", "pattern"}
        return {"baseline": LatencyStats(baseline), "pattern": LatencyStats(pattern)}

    monkeypatch.setattr(_meter, "interleaved_latencies", fake)
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    evaluator = PatternEvaluator(experiment, experiment.full, experiment.tasks("val", 2, 0), latency_tasks=1)
    timing = evaluator.latencies(experiment.pattern("001:1"))
    assert timing.latency_ms / timing.baseline_ms == pytest.approx(1 / 40)
    assert timing.ratio == pytest.approx(1 / 10)
    measurement = evaluator.measure(experiment.pattern("001:1"))
    assert measurement.speedup == pytest.approx(10.0) and measurement.time_objective("ratio") == pytest.approx(0.1)


def test_bench_and_deployment_timing_time_the_deployed_adapters_and_name_their_paths(
        sinusoid_checkpoint: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    tasks = experiment.tasks("val", 2, 0)
    rows = {row.name: row for row in bench(experiment, [experiment.pattern("001:2")], tasks, repeats=2, warmup=0)}
    assert rows["plain-loop"].path == PLAIN_PATH and rows["plain-loop"].deployed_latency_ms is None
    for name in ("full", "001:2", "full@2"):
        row = rows[name]
        assert row.path.startswith("deployed: as given, adapt eager, predict eager"), row.path
        assert row.deployed_adapt_predict_ms and row.deployed_adapt_predict_speedup and row.plain_loop_speedup
    assert rows["full"].deployed_speedup == rows["full"].deployed_adapt_predict_speedup == 1.0  # paired with itself
    timing = deployment_timing(experiment.model, experiment.pattern("001:2"), experiment.full, experiment.inner_lr,
                               experiment.benchmark.loss_fn, tasks, experiment.device, repeats=1)
    assert timing.path.startswith("deployed:") and timing.baseline_path.startswith("deployed:")
    assert timing.as_dict()["path"] == timing.path
