from __future__ import annotations

from pathlib import Path

import pytest

from patternsearch.experiment import open_experiment
from patternsearch.measurement import LatencyStats, PatternEvaluator, _meter

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
