"""One meta-update: the inner pattern, the meta-gradient over a batch of tasks, validation and their timing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..adaptation import LossFn, adapt, functional_forward
from ..benchmarks import Benchmark, Task
from ..measurement import LatencyStats, interleaved_latencies, score_pattern
from ..pattern import Pattern
from ._config import TrainConfig


def validate(model: torch.nn.Module, benchmark: Benchmark, config: TrainConfig, pattern: Pattern,
             device: torch.device) -> float:
    """Mean validation score; draws its random numbers (dropout) from a fork, leaving training's stream as it was.

    So a run validated at other iterations (a resume validates where it
    stopped) trains on the same random numbers.
    """
    tasks = [t.to(device) for t in benchmark.tasks("val", config.val_tasks, seed=config.seed)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return float(score_pattern(model, benchmark, tasks, pattern, float(config.inner_lr or 0.0)).mean())


def inner_pattern(config: TrainConfig, num_groups: int) -> Pattern:
    """The inner loop of meta-training: ``config.pattern``, else full MAML at ``train_steps``."""
    if config.pattern is not None:
        return Pattern.parse(config.pattern, num_groups=num_groups).canonical()
    return Pattern.full(num_groups, int(config.train_steps or 1))


def accumulate_meta_gradient(
    model: torch.nn.Module,
    tasks: Sequence[Task],
    pattern: Pattern,
    inner_lr: float,
    loss_fn: LossFn,
    *,
    first_order: bool = False,
) -> float:
    """Adds the MAML outer gradient of ``tasks`` to the parameters' ``.grad``.

    Each task adapts with ``pattern`` from the live parameters (second order
    unless ``first_order``); the outer loss is the mean query loss after
    adaptation, differentiated with respect to every parameter.

    Returns:
        The mean query loss.
    """
    total = 0.0
    for task in tasks:
        adapted = adapt(model, task.x_support, task.y_support, pattern, inner_lr, loss_fn,
                        params=dict(model.named_parameters()), create_graph=not first_order, first_order=first_order)
        loss = loss_fn(functional_forward(model, adapted, task.x_query), task.y_query) / len(tasks)
        loss.backward()
        total += float(loss.detach())
    return total



def meta_update_times(model: torch.nn.Module, benchmark: Benchmark, patterns: Sequence[Pattern], inner_lr: float,
                      *, meta_batch: int, batches: int = 1, first_order: bool = False,
                      device: torch.device | None = None, rounds: int = 3, seed: int = 7) -> dict[str, LatencyStats]:
    """Times one meta-update with each pattern as the inner loop, interleaved, after a warm-up round.

    One meta-update is what :func:`train` does per iteration, without the
    optimizer step (the same for every pattern): the weights never change
    (the gradients are dropped), so every pattern is timed on the same work.

    Args:
        model: The network (its parameters receive and lose gradients).
        benchmark: Where the training episodes come from.
        patterns: Inner-loop patterns.
        inner_lr: Inner-loop learning rate.
        meta_batch: Tasks per meta-update.
        batches: Meta-batches timed per round.
        first_order: First-order MAML.
        device: Where the model lives (default: its parameters' device).
        rounds: Timed rounds.
        seed: Seed of the timed training episodes.

    Returns:
        Per pattern (its text), the times of its meta-updates (milliseconds).
    """
    device = device or next(model.parameters()).device
    source = benchmark.split("train")
    timed_batches = [[source.task(b * meta_batch + j, seed).to(device) for j in range(meta_batch)]
                     for b in range(batches)]

    def meta_update(pattern: Pattern) -> Callable[[Sequence[Task]], float]:
        def run(tasks: Sequence[Task]) -> float:
            model.zero_grad(set_to_none=True)
            return accumulate_meta_gradient(model, tasks, pattern, inner_lr, benchmark.loss_fn,
                                            first_order=first_order)
        return run

    times = interleaved_latencies({str(p): meta_update(p) for p in patterns}, timed_batches,  # type: ignore[arg-type]
                                  device, repeats=rounds)
    model.zero_grad(set_to_none=True)
    return times
