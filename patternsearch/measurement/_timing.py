"""Honest latency measurement of adaptation: warm-up, interleaving, medians.

On a GPU every sample is bracketed by CUDA events recorded on the measured
device's current stream after a synchronisation, so the time is that device's,
not the launch queue's (and ``cuda:1`` times device 1). Inputs are moved to
the device before timing and the adaptation runs without its divergence
check, so nothing is copied between host and device inside the timed region;
the check runs on the result after timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..adaptation import LossFn, Params, adapt, check_finite_params
from ..benchmarks import Task
from ..pattern import Pattern


@dataclass(frozen=True)
class LatencyStats:
    """Latency samples of one adaptation variant, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        """Median latency."""
        return float(np.median(self.samples_ms))

    @property
    def spread_ms(self) -> float:
        """Inter-quartile range."""
        q25, q75 = np.percentile(self.samples_ms, [25, 75])
        return float(q75 - q25)

    def as_dict(self) -> dict[str, float]:
        """Median, spread and sample count."""
        return {"latency_ms": self.median_ms, "latency_iqr_ms": self.spread_ms, "latency_samples": len(self.samples_ms)}

    def ratio_to(self, baseline: LatencyStats) -> float:
        """The latency ratio: median over paired samples of this one's time divided by the baseline's.

        Sample ``i`` of every variant of one :func:`interleaved_latencies`
        call is the same task in the same round, run back to back, so a burst
        of load on a shared machine slows both samples of a pair and cancels
        in their ratio, where it would skew a ratio of medians.
        """
        return float(np.median(np.asarray(self.samples_ms) / np.asarray(baseline.samples_ms)))

    def speedup_over(self, baseline: LatencyStats) -> float:
        """**Speedup**, the one definition every command prints: ``1 / ratio_to(baseline)``."""
        return 1.0 / max(self.ratio_to(baseline), 1e-12)


def adaptation_call(model: torch.nn.Module, pattern: Pattern, inner_lr: float,
                    loss_fn: LossFn | None) -> Callable[[Task], Params]:
    """The adaptation that every latency measures: ``adapt`` on a task's support set, no host sync inside."""
    return lambda task: adapt(model, task.x_support, task.y_support, pattern, inner_lr, loss_fn, check_finite=False)


def time_call(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Milliseconds one call takes on ``device``, and what it returned."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            result = fn()
            end.record(stream)
            torch.cuda.synchronize(device)
            return float(start.elapsed_time(end)), result
    began = time.perf_counter()
    result = fn()
    return (time.perf_counter() - began) * 1000.0, result


def interleaved_latencies(
    variants: Mapping[str, Callable[[Task], object]],
    tasks: Sequence[Task],
    device: torch.device,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, LatencyStats]:
    """Times several adaptation variants on the same tasks, interleaved.

    Each round runs every variant once per task, in an order that rotates from
    round to round (A B C, B C A, ...), so slow drifts of a shared machine hit
    all variants alike.

    Args:
        variants: Name → function that adapts on one task.
        tasks: Tasks already on ``device``.
        device: Where the work runs.
        repeats: Timed rounds.
        warmup: Untimed rounds first.

    Returns:
        Latency statistics per variant (``repeats * len(tasks)`` samples each).

    Raises:
        FloatingPointError: If a variant's adapted parameters are not finite
            (checked after the timing, on the last round).
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for task in tasks:
            for name in order:
                elapsed, result = time_call(lambda fn=variants[name], t=task: fn(t), device)
                if round_index >= warmup:
                    samples[name].append(elapsed)
                if round_index == warmup + repeats - 1 and isinstance(result, dict):
                    check_finite_params(result)
    return {name: LatencyStats(tuple(values)) for name, values in samples.items()}
