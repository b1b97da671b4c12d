"""The naive MAML inner loop, kept as the reference that the fast path must match.

Every step runs the whole model and differentiates with respect to every
parameter with ``torch.autograd.grad``, then applies SGD to the ones its phase
flags, at the phase's scaled learning rate.
With the ``full`` pattern this is the plain PyTorch MAML loop that ``bench``
uses as its reference point. :func:`reference_scores` scores tasks one at a
time with it: the naive evaluator the fast scorer is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adaptation import LossFn, Params, functional_forward
from .benchmarks import Benchmark, Task
from .groups import layer_groups
from .pattern import Pattern


def reference_adapt(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pattern: Pattern,
    inner_lr: float,
    loss_fn: LossFn | None = None,
    *,
    layout: bool = True,
) -> Params:
    """Adapts like :func:`patternsearch.adapt`, without skipping any work: the plain PyTorch loop.

    Args:
        model: The network; it is not modified.
        x: Support inputs.
        y: Support targets.
        pattern: Phases of flags, steps and learning-rate scales.
        inner_lr: SGD learning rate (times each phase's scale).
        loss_fn: Loss; cross-entropy by default.
        layout: Run in the layout ``adapt`` chooses (default, for comparing
            results: convolutions round differently channels-last, and full
            MAML's ten steps on the shipped checkpoint amplify that to a
            relative parameter difference of 4e-3); False runs the tensors as
            given, as a plain loop written without it does.

    Returns:
        Adapted parameters by name (detached).
    """
    loss_fn = loss_fn or F.cross_entropy
    groups = layer_groups(model)
    if len(groups) != pattern.num_groups:
        raise ValueError(f"pattern has {pattern.num_groups} flags but the model has {len(groups)} layer groups")
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    for phase in pattern.canonical().phases:
        if phase.is_noop:
            continue
        flagged = {name for group, flag in zip(groups, phase.flags, strict=True) if flag for name in group.params}
        with torch.enable_grad():
            for _ in range(phase.steps):
                leaves = {name: t.requires_grad_() for name, t in params.items()}
                loss = loss_fn(functional_forward(model, leaves, x, layout=layout), y)
                grads = torch.autograd.grad(loss, list(leaves.values()))
                with torch.no_grad():
                    params = {
                        name: (t - inner_lr * phase.scale * g if name in flagged else t).detach()
                        for (name, t), g in zip(leaves.items(), grads, strict=True)
                    }
    return params


def reference_scores(
    model: nn.Module, tasks: Sequence[Task], pattern: Pattern, inner_lr: float, benchmark: Benchmark
) -> np.ndarray:
    """Per-task query scores of ``pattern``, adapting every task from scratch with :func:`reference_adapt`."""
    scores = []
    for task in tasks:
        params = reference_adapt(model, task.x_support, task.y_support, pattern, inner_lr, benchmark.loss_fn)
        with torch.no_grad():
            scores.append(benchmark.score_fn(functional_forward(model, params, task.x_query), task.y_query))
    return np.array(scores)
