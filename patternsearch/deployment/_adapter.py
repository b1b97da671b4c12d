"""The deployed adapter: one pattern's adaptation and prediction, prepared once for one device.

What it prepares, once:

* **layout**: on the CPU a convolutional model's weights are kept, and its
  inputs converted, channels-last (:func:`~patternsearch.adaptation.channels_last`);
* **plan**: the pattern's frozen-prefix plan (:func:`~patternsearch.adaptation.adaptation_plan`);
* **compilation** (``torch.compile``, inductor), where a compiler is present
  and it pays, warmed up on example inputs:

  - on CUDA, adaptation and prediction are compiled with CUDA graphs
    (``mode="reduce-overhead"``): few-shot adaptation is hundreds of small
    kernels, whose launches a replayed graph removes;
  - on the CPU, prediction is compiled when its eager forward takes at least
    :data:`WORTH_COMPILING_MS` and the compiled one is measured faster at
    warm-up (median of paired, back-to-back calls): the query forward is
    memory-bound work (batch norm, ReLU, pooling over a large batch) that the
    compiler fuses. Adaptation stays eager there: compiling it means a
    backward graph per pattern (over a minute for full MAML's ten steps on a
    2-core CPU, cold cache), paid by every command that times a pattern,
    for a gain too small to measure reliably on a shared host;
    ``compiled=True`` compiles it too.

The compiled adaptation is :func:`~patternsearch.adaptation.adapt` itself,
traced into one graph of the support set (the weights its constants: the
trace ``patternsearch export`` writes, :func:`~._program.trace_adaptation`)
for the shapes and the module modes of the example. A model in training mode with an active random
module (dropout) is deployed eager: compiled code draws other random numbers
than eager code, so its predictions would not be the ones ``adapt`` +
``functional_forward`` give; put such a model in ``eval()`` mode to compile
it. Models whose batch norm updates running statistics in training mode adapt
eager too (the functional program would have to thread the statistics
through every step); their prediction may be compiled.

The adapter holds its own copy of the weights, taken when it is made: a
model trained further needs a new adapter.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..adaptation import (
    LossFn,
    Params,
    adapt,
    adaptation_plan,
    channels_last,
    check_finite_params,
    convolves,
    copied_buffers,
    draws_random,
    laid_out,
    updates_running_statistics,
)
from ..groups import layer_groups
from ..pattern import Pattern
from ._program import trace_adaptation

WORTH_COMPILING_MS = 1.0
"""Eager prediction time (ms) from which the CPU tries a compiled prediction: below it, per-call overhead dominates."""

_RECOMPILE_LIMIT = 64  # compiled programs share code objects, one cache entry per adapter: room for many patterns

Example = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class DeploymentPath:
    """What a deployed adapter runs, for the record of every time measured on it.

    Attributes:
        layout: ``channels-last`` or ``as given``.
        adapt: ``eager``, ``compiled`` or ``compiled, CUDA graphs``.
        predict: The same for the prediction.
        note: Why something is not compiled, if it is not.
    """

    layout: str
    adapt: str
    predict: str
    note: str | None = None

    def describe(self) -> str:
        """One line, e.g. ``deployed: channels-last, adapt eager, predict compiled``."""
        text = f"deployed: {self.layout}, adapt {self.adapt}, predict {self.predict}"
        return text + (f" ({self.note})" if self.note else "")


def compiler_present(device: torch.device) -> bool:
    """Whether ``torch.compile``'s inductor can generate code for ``device``: a C++ compiler, or Triton on CUDA."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return bool(has_triton())
    if device.type != "cpu":
        return False
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if name)


def compile_options(device: torch.device) -> dict[str, object]:
    """``torch.compile`` options for ``device``: static shapes, and CUDA graphs on CUDA."""
    options: dict[str, object] = {"dynamic": False}
    if device.type == "cuda":
        options["mode"] = "reduce-overhead"
    return options


def _elapsed_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - began) * 1000.0


def _paired_ratio(fn: Callable[[], object], other: Callable[[], object], device: torch.device,
                  pairs: int = 7) -> float:
    """Median over back-to-back pairs of ``fn``'s time over ``other``'s (a burst of load slows both)."""
    ratios = []
    for i in range(pairs):
        if i % 2:
            mine = _elapsed_ms(fn, device)
            ratios.append(mine / max(_elapsed_ms(other, device), 1e-9))
        else:
            theirs = _elapsed_ms(other, device)
            ratios.append(_elapsed_ms(fn, device) / max(theirs, 1e-9))
    return statistics.median(ratios)



class DeployedAdapter:
    """One pattern's adaptation and prediction for one model on one device, prepared once (see the module doc).

    Args:
        model: The meta-trained network, on the device to deploy on; its
            modes (``train``/``eval``) at this call are the ones deployed.
        pattern: The pattern (or its text).
        inner_lr: The checkpoint's inner learning rate.
        loss_fn: The inner loss (cross-entropy by default).
        example: Support inputs, support targets and query inputs of the
            size deployed (e.g. one task's), to compile and warm up on.
            Without it nothing is compiled.
        compiled: None (default): compile where a compiler is present and it
            pays (see the module doc); True: compile adaptation and prediction
            wherever a compiler is present; False: eager.
        check_finite: Raise on a diverged adaptation (a host sync per call;
            timing turns it off).

    Raises:
        ValueError: The pattern does not fit the model.
    """

    def __init__(
        self,
        model: nn.Module,
        pattern: Pattern | str,
        inner_lr: float,
        *,
        loss_fn: LossFn | None = None,
        example: Example | Sequence[Tensor] | None = None,
        compiled: bool | None = None,
        check_finite: bool = True,
    ) -> None:
        if not isinstance(pattern, Pattern):
            pattern = Pattern.parse(pattern, num_groups=len(layer_groups(model)))
        self.model, self.pattern, self.inner_lr = model, pattern.canonical(), inner_lr
        self.loss_fn: LossFn = loss_fn or F.cross_entropy
        self.check_finite = check_finite
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self._layout = self.device.type == "cpu" and convolves(model)
        weights = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._params = laid_out(weights) if self._layout else weights
        if not pattern.is_none:
            adaptation_plan(model, self.pattern)  # built now, not in the first call
        self._mutable_buffers = updates_running_statistics(model)
        self._buffers = dict(model.named_buffers())
        self._compiled_adapt: Callable[[Tensor, Tensor], Params] | None = None
        self._compiled_predict: Callable[[Params, Params, Tensor], Tensor] | None = None
        adapt_how, predict_how, note = "eager", "eager", None
        if compiled is not False and example is not None:
            try:
                adapt_how, predict_how, note = self._compile((example[0], example[1], example[2]), compiled)
            except FloatingPointError:
                raise
            except Exception as error:  # a model the compiler cannot handle still deploys, eager
                self._compiled_adapt = self._compiled_predict = None
                note = f"compilation failed ({type(error).__name__}): eager"
        elif compiled is not False:
            note = "no example inputs to compile for"
        self.path = DeploymentPath("channels-last" if self._layout else "as given", adapt_how, predict_how, note)

    # -- preparation -----------------------------------------------------------------------------------------

    def _compile(self, example: Example, force: bool | None) -> tuple[str, str, str | None]:
        """Compiles what pays, warms it up, and says what runs: (adapt, predict, note)."""
        if not compiler_present(self.device):
            return "eager", "eager", f"no compiler for {self.device.type} code"
        if draws_random(self.model):
            return "eager", "eager", "active dropout draws random numbers: eval() mode compiles"
        x, y, query = (self._input(t) for t in example)
        kind = "compiled, CUDA graphs" if self.device.type == "cuda" else "compiled"
        options = compile_options(self.device)
        notes = []
        with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
            if force or self.device.type == "cuda":
                if self._mutable_buffers:
                    notes.append("batch norm updating running statistics adapts eager")
                elif not self.pattern.is_none:
                    program = trace_adaptation(self.model, self.pattern, self.inner_lr, self.loss_fn, self._params,
                                               (x, y))
                    self._compiled_adapt = torch.compile(program, **options)
            params = self.adapt(x, y)
            eager_ms = statistics.median(_elapsed_ms(lambda: self._eager_predict(params, query), self.device)
                                         for _ in range(3))
            if force or self.device.type == "cuda" or eager_ms >= WORTH_COMPILING_MS:
                self._compiled_predict = torch.compile(functional_call_of(self.model), **options)  # type: ignore[arg-type]
                for _ in range(3):  # compile, then (CUDA graphs) warm up and record
                    self(x, y, query)
                if not force and self.device.type != "cuda":
                    ratio = _paired_ratio(lambda: self.predict(params, query),
                                          lambda: self._eager_predict(params, query), self.device)
                    if ratio >= 1.0:
                        self._compiled_predict = None
                        notes.append(f"compiled prediction not faster ({ratio:.2f}x eager's time, paired)")
            else:
                notes.append(f"prediction takes {eager_ms:.2g} ms eager: compiling does not pay")
        if not force and self.device.type == "cpu" and not self.pattern.is_none and self._compiled_adapt is None:
            notes.append("adaptation eager on the CPU")
        adapt_how = kind if self._compiled_adapt is not None else "eager"
        return adapt_how, kind if self._compiled_predict is not None else "eager", "; ".join(notes) or None

    def _input(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        return channels_last(x) if self._layout and x.dim() == 4 else x

    def _buffer_copies(self) -> Params:
        return copied_buffers(self.model) if self._mutable_buffers else self._buffers

    # -- use -------------------------------------------------------------------------------------------------

    def adapt(self, x: Tensor, y: Tensor) -> Params:
        """Adapts to a support set: every parameter by name, the flagged ones adapted (as ``adapt`` returns them).

        Raises:
            FloatingPointError: If adaptation diverges (when ``check_finite``).
        """
        x, y = self._input(x), y.to(self.device)
        if self._compiled_adapt is None:
            return adapt(self.model, x, y, self.pattern, self.inner_lr, self.loss_fn, params=self._params,
                         check_finite=self.check_finite)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            adapted = self._compiled_adapt(x, y)
        if self.device.type == "cuda":  # a replayed graph's outputs are overwritten by its next replay
            adapted = {name: t.clone() for name, t in adapted.items()}
        if self.check_finite:
            check_finite_params(adapted)
        return adapted

    def _eager_predict(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        with torch.no_grad():
            return functional_call(self.model, {**params, **self._buffer_copies()}, (x,))

    def predict(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The model's output on ``x`` with ``params`` (e.g. from :meth:`adapt`), without gradients."""
        x = self._input(x)
        if self._layout:
            params = laid_out(params)
        if self._compiled_predict is None:
            return self._eager_predict(params, x)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            output = self._compiled_predict(dict(params), self._buffer_copies(), x)
        return output.clone() if self.device.type == "cuda" else output

    def __call__(self, x_support: Tensor, y_support: Tensor, x_query: Tensor) -> Tensor:
        """Adapts to the support set, then predicts the query inputs: what a deployment waits for.

        Raises:
            FloatingPointError: If adaptation diverges (when ``check_finite``).
        """
        return self.predict(self.adapt(x_support, y_support), x_query)


def functional_call_of(model: nn.Module) -> Callable[[Params, Params, Tensor], Tensor]:
    """``model`` as a pure function of (parameters, buffers, inputs)."""
    def forward(params: Params, buffers: Params, x: Tensor) -> Tensor:
        return functional_call(model, {**params, **buffers}, (x,))

    return forward

