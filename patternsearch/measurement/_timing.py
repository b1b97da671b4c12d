"""Honest latency measurement of adaptation: warm-up, interleaving, medians.

Two times are measured. **Adaptation time** (:func:`adaptation_call`) is
what the search optimises and what every **speedup** is made of. **Adapt +
predict time** (:func:`with_prediction`) adds the forward pass over a
task's query batch, as a deployment that adapts and then predicts sees it:
that forward pass is the same for every pattern, so the end-to-end ratio is
smaller. :func:`deployment_timing` measures both for a pattern and its
baseline on their **deployed** adapters
(:class:`~patternsearch.deployment.DeployedAdapter`: best layout, compiled
where it pays), interleaved, and :func:`timing_noise` says when a machine's
load makes the ratios unreliable.

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
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..adaptation import LossFn, Params, adapt, check_finite_params, functional_forward
from ..benchmarks import Task
from ..deployment import DeployedAdapter
from ..pattern import Pattern

NOISY_SPREAD = 2.0  # the baseline's 90th latency percentile over its 10th beyond which speedups are unreliable


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
        """**Speedup**, the one definition every command prints: :func:`speedup_of` ``ratio_to(baseline)``."""
        return speedup_of(self.ratio_to(baseline))


def speedup_of(ratio: float) -> float:
    """The speedup of a latency ratio (pattern over baseline, paired medians): ``1 / ratio``."""
    return 1.0 / max(ratio, 1e-12)


def adaptation_call(model: torch.nn.Module, pattern: Pattern, inner_lr: float,
                    loss_fn: LossFn | None) -> Callable[[Task], Params]:
    """The adaptation that every latency measures: ``adapt`` on a task's support set, no host sync inside."""
    return lambda task: adapt(model, task.x_support, task.y_support, pattern, inner_lr, loss_fn, check_finite=False)


def with_prediction(model: torch.nn.Module, adapt_fn: Callable[[Task], Params]) -> Callable[[Task], torch.Tensor]:
    """``adapt_fn``, then the prediction for the task's whole query batch with the adapted weights (no gradients).

    This is adapt + predict, what a deployment that adapts and then predicts waits for.
    """
    def call(task: Task) -> torch.Tensor:
        params = adapt_fn(task)
        with torch.no_grad():
            return functional_forward(model, params, task.x_query)

    return call


def deployed_adapter(model: torch.nn.Module, pattern: Pattern, inner_lr: float, loss_fn: LossFn | None,
                     example: Task, *, compiled: bool | None = None) -> DeployedAdapter:
    """The deployed adapter that timing measures: prepared and warmed up on ``example``, no host sync inside."""
    return DeployedAdapter(model, pattern, inner_lr, loss_fn=loss_fn, compiled=compiled, check_finite=False,
                           example=(example.x_support, example.y_support, example.x_query))


def deployed_calls(adapter: DeployedAdapter) -> tuple[Callable[[Task], Params], Callable[[Task], torch.Tensor]]:
    """The deployed adapter's adaptation, and its adapt + predict, on a task (what timing runs)."""
    return (lambda task: adapter.adapt(task.x_support, task.y_support),
            lambda task: adapter(task.x_support, task.y_support, task.x_query))


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


@dataclass(frozen=True)
class DeploymentTiming:
    """A pattern's adaptation time and adapt + predict time, each next to the baseline's (interleaved, paired).

    Attributes:
        latency_ms: The pattern's median adaptation time.
        baseline_latency_ms: The baseline's.
        speedup: Baseline adaptation time over the pattern's
            (:meth:`LatencyStats.speedup_over`): the quantity the search optimises.
        adapt_predict_ms: The pattern's median adapt + predict time.
        baseline_adapt_predict_ms: The baseline's.
        adapt_predict_speedup: Baseline adapt + predict time over the pattern's (paired).
        query_batch: Query examples predicted per task.
        noise: A warning when the baseline's samples spread too much for the ratios to be trusted.
        path: What was timed for the pattern (:meth:`DeploymentPath.describe
            <patternsearch.deployment.DeploymentPath.describe>`; empty in records made before deployment).
        baseline_path: The same for the baseline.
    """

    latency_ms: float
    baseline_latency_ms: float
    speedup: float
    adapt_predict_ms: float
    baseline_adapt_predict_ms: float
    adapt_predict_speedup: float
    query_batch: int
    noise: str | None
    path: str = ""
    baseline_path: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (the names ``select`` and ``evaluate`` print)."""
        return asdict(self)


def deployment_timing(
    model: torch.nn.Module,
    pattern: Pattern,
    baseline: Pattern,
    inner_lr: float,
    loss_fn: LossFn | None,
    tasks: Sequence[Task],
    device: torch.device,
    *,
    repeats: int = 5,
    warmup: int = 1,
    compiled: bool | None = None,
) -> DeploymentTiming:
    """Times ``pattern`` and ``baseline`` adapting, and adapting then predicting, all four interleaved.

    Each side runs on its deployed adapter (made and warmed up here, on the
    first task), the path a deployment of it would run.

    Args:
        model: The meta-trained model (both patterns adapt it: cost does not depend on the weights).
        pattern: The pattern.
        baseline: The baseline pattern.
        inner_lr: Inner learning rate.
        loss_fn: The benchmark's loss (None: cross-entropy).
        tasks: Tasks already on ``device``.
        device: Where the work runs.
        repeats: Timed rounds.
        warmup: Untimed rounds first.
        compiled: The adapters' compilation (None: where it pays; see
            :class:`~patternsearch.deployment.DeployedAdapter`).

    Raises:
        FloatingPointError: If an adaptation diverges.
    """
    mine_adapter, base_adapter = (deployed_adapter(model, p, inner_lr, loss_fn, tasks[0], compiled=compiled)
                                  for p in (pattern, baseline))
    (mine_adapt, mine_both), (base_adapt, base_both) = deployed_calls(mine_adapter), deployed_calls(base_adapter)
    stats = interleaved_latencies({
        "pattern": mine_adapt, "baseline": base_adapt, "pattern+predict": mine_both, "baseline+predict": base_both,
    }, tasks, device, repeats=repeats, warmup=warmup)
    mine, base = stats["pattern"], stats["baseline"]
    mine_end, base_end = stats["pattern+predict"], stats["baseline+predict"]
    return DeploymentTiming(
        latency_ms=mine.median_ms, baseline_latency_ms=base.median_ms, speedup=mine.speedup_over(base),
        adapt_predict_ms=mine_end.median_ms, baseline_adapt_predict_ms=base_end.median_ms,
        adapt_predict_speedup=mine_end.speedup_over(base_end), query_batch=int(tasks[0].x_query.shape[0]),
        noise=timing_noise(base.samples_ms), path=mine_adapter.path.describe(),
        baseline_path=base_adapter.path.describe(),
    )


def timing_noise(baseline_ms: Sequence[float], *, where: str = "in this run") -> str | None:
    """A one-sentence warning when the baseline's latency varied too much for speedups to be trusted.

    The baseline adapts the same way every time, so its latency should hardly
    vary. Speedups are medians of paired ratios, which cancel slow drifts;
    when the baseline's 90th percentile is more than ``NOISY_SPREAD`` times
    its 10th, the load changed within pairs too (a busy shared machine), and
    the ratios are unreliable.

    Args:
        baseline_ms: The baseline's latencies: samples of one run, or the
            medians a study's trials measured.
        where: Where they come from, for the message (e.g. ``"between trials"``).

    Returns:
        The warning, or None when the spread is small (or there are fewer than two values).
    """
    values = np.asarray([v for v in baseline_ms if v > 0], dtype=np.float64)
    if values.size < 2:
        return None
    low, high = (float(v) for v in np.percentile(values, [10, 90]))
    if high <= NOISY_SPREAD * low:
        return None
    return (f"timing is noisy: the baseline's adaptation took {low:.3g} to {high:.3g} ms {where} (10th to 90th "
            f"percentile of {values.size}), so the speedups are unreliable; rerun on a quiet machine (no other jobs "
            "on its cores) and re-time the patterns with 'patternsearch bench'")
