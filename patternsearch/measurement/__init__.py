"""Measurement: the one place that scores, times and counts the FLOPs of patterns.

* :class:`CachedScorer` / :func:`score_pattern`: per-task query scores (every
  command scores through them, so the same pattern on the same tasks gives
  the same numbers everywhere);
* :func:`interleaved_latencies`: adaptation latency, interleaved, warm-up,
  medians, CUDA events on the measured device; :func:`deployment_timing`:
  adaptation time and adapt + predict time of a pattern and its baseline,
  each on its deployed adapter (:func:`deployed_adapter`);
  :func:`timing_noise`: whether a machine's load makes speedups unreliable;
* :func:`adaptation_flops`: FLOPs of one adaptation;
* :class:`PatternEvaluator`: all three for one pattern against a baseline,
  with early stopping over task chunks (:func:`race`), giving one
  :class:`Measurement` record;
* :func:`bench`: the latency table of ``patternsearch bench``.
"""

from ._bench import PLAIN_PATH, BenchRow, bench
from ._flops import adaptation_flops
from ._meter import Measurement, PatternEvaluator, Timing, time_objective
from ._precision import environment, exact_precision
from ._racing import MIN_TASKS, RaceOutcome, Rival, race, surely_worse, task_chunks
from ._scoring import CachedScorer, default_threads, score_pattern
from ._timing import (
    NOISY_SPREAD,
    DeploymentTiming,
    LatencyStats,
    adaptation_call,
    deployed_adapter,
    deployed_calls,
    deployment_timing,
    interleaved_latencies,
    time_call,
    timing_noise,
    with_prediction,
)

__all__ = [
    "MIN_TASKS",
    "NOISY_SPREAD",
    "PLAIN_PATH",
    "BenchRow",
    "CachedScorer",
    "DeploymentTiming",
    "LatencyStats",
    "Measurement",
    "PatternEvaluator",
    "RaceOutcome",
    "Rival",
    "Timing",
    "adaptation_call",
    "adaptation_flops",
    "bench",
    "default_threads",
    "deployed_adapter",
    "deployed_calls",
    "deployment_timing",
    "environment",
    "exact_precision",
    "interleaved_latencies",
    "race",
    "score_pattern",
    "surely_worse",
    "task_chunks",
    "time_call",
    "time_objective",
    "timing_noise",
    "with_prediction",
]
