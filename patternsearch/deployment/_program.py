"""Adapt + predict as one pure function of the task, and its trace: an aten graph with the pattern's savings.

:func:`adapt_predict` is :func:`~patternsearch.adaptation.adapt` then
:func:`~patternsearch.adaptation.functional_forward` with the divergence check
left out (``check_finite=False``): that check reads a value on the host, which
a trace cannot hold. A diverged adaptation gives non-finite outputs instead;
the caller checks them (``torch.isfinite``).

:func:`trace_adapt_predict` records the function with ``make_fx``: autograd
runs while tracing, so the graph holds the forward and backward operations
the fast path actually runs (frozen groups compute no weight gradient,
backward stops at the earliest flagged group, the frozen prefix runs once)
and the model's weights as constants. It needs no Python and no patternsearch
to run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.fx import GraphModule
from torch.fx.experimental.proxy_tensor import make_fx

from ..adaptation import LossFn, Params, adapt, functional_forward
from ..pattern import Pattern

INPUT_NAMES = ("x_support", "y_support", "x_query")

AdaptPredict = Callable[[Tensor, Tensor, Tensor], Tensor]


def adapt_predict(model: nn.Module, pattern: Pattern, inner_lr: float, loss_fn: LossFn) -> AdaptPredict:
    """``run(x_support, y_support, x_query) -> outputs``: adapt to the support set, then predict the queries.

    Args:
        model: The meta-trained network, in the modes to adapt in; not modified.
        pattern: The adaptation.
        inner_lr: The checkpoint's inner learning rate.
        loss_fn: The benchmark's loss.

    Returns:
        A function without host reads (no divergence check), to trace.
    """

    def run(x_support: Tensor, y_support: Tensor, x_query: Tensor) -> Tensor:
        params = adapt(model, x_support, y_support, pattern, inner_lr, loss_fn, check_finite=False)
        return functional_forward(model, params, x_query)

    return run


def trace_adapt_predict(model: nn.Module, pattern: Pattern, inner_lr: float, loss_fn: LossFn,
                        sample: tuple[Tensor, Tensor, Tensor]) -> GraphModule:
    """The aten graph of :func:`adapt_predict` for the shapes of ``sample``, inputs named as in :data:`INPUT_NAMES`.

    Args:
        model: The meta-trained network, in the modes to adapt in.
        pattern: The adaptation.
        inner_lr: The checkpoint's inner learning rate.
        loss_fn: The benchmark's loss.
        sample: Support inputs, support targets and query inputs of one task.

    Raises:
        Exception: Whatever tracing raises for a model it cannot trace (a
            value read on the host, data-dependent control flow).
    """
    with torch.no_grad():  # as a deployment calls it; adapt enables gradients where it needs them
        graph = make_fx(adapt_predict(model, pattern, inner_lr, loss_fn))(*sample)
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    for node, name in zip(placeholders, INPUT_NAMES, strict=True):
        node.name = node.target = name
    graph.recompile()
    return graph


def trace_adaptation(model: nn.Module, pattern: Pattern, inner_lr: float, loss_fn: LossFn, params: Params,
                     support: tuple[Tensor, Tensor]) -> GraphModule:
    """The aten graph of :func:`~patternsearch.adaptation.adapt` from ``params``: ``(x, y) -> adapted params``.

    The same trace as :func:`trace_adapt_predict` without the prediction, for
    a compiler (the deployed adapter's compiled adaptation): ``params`` and
    the model's buffers are constants of the graph.

    Args:
        model: The meta-trained network, in the modes to adapt in.
        pattern: The adaptation.
        inner_lr: The checkpoint's inner learning rate.
        loss_fn: The benchmark's loss.
        params: The weights to adapt from (e.g. in the layout deployed).
        support: Support inputs and targets of the shapes to trace for.
    """

    def run(x_support: Tensor, y_support: Tensor) -> Params:
        return adapt(model, x_support, y_support, pattern, inner_lr, loss_fn, params=params, check_finite=False)

    with torch.no_grad():
        return make_fx(run)(*support)
