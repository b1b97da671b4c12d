"""FLOPs of one adaptation, counted by PyTorch's ``FlopCounterMode``."""

from __future__ import annotations

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..adaptation import LossFn, adapt
from ..benchmarks import Task
from ..pattern import Pattern


def adaptation_flops(
    model: nn.Module, task: Task, pattern: Pattern, inner_lr: float, loss_fn: LossFn | None = None
) -> int:
    """Floating-point operations of adapting to ``task`` (forward and backward).

    Counts what really runs: a frozen prefix's forward once, no weight
    gradients for frozen groups, no backward below the first updated group.
    Deterministic, so it can stand in for time (``--time-metric flops``).
    """
    with FlopCounterMode(display=False) as counter:
        adapt(model, task.x_support, task.y_support, pattern, inner_lr, loss_fn)
    return int(counter.get_total_flops())
