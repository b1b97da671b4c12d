"""Pattern adaptation: MAML's inner loop restricted to the flagged layer groups.

The fast path skips what a frozen group does not need:

* frozen parameters enter the computation as constants, so autograd computes
  no weight gradient for them, and backward stops at the earliest flagged
  group (nothing before it requires a gradient);
* when the model is a sequence (``nn.Sequential``, nested ones flattened) the
  stages frozen in every phase form a frozen prefix, whose output on the
  support set is computed once per adaptation instead of once per step; a
  phase that starts deeper runs the stages between once at its start (they
  are frozen while it runs), then only its own suffix at every step.

Modes: adaptation runs every module in the mode it is in *at the call*
(``model.train()``/``model.eval()``, per module). The built-in models use
batch statistics always (``track_running_stats=False``), i.e. the
transductive setting of Finn et al. (2017): the support batch during
adaptation, the query batch at prediction. Buffers are copied per call, so a
model with running statistics is never modified. A stage with an active
dropout (any ``Dropout*`` or ``*Drop*`` module in training mode) is random, so
the frozen prefix ends before it and it runs at every step, as in the naive
loop.

Layout: on the CPU, a model with 2-D convolutions adapts and predicts in the
channels-last memory format (inputs and 4-D weights), which oneDNN convolves
about 1.4x faster than NCHW for few-shot batch sizes; :func:`adapt` and
:func:`functional_forward` convert ordinary NCHW tensors themselves (see
:func:`preferred_layout`), so the values are the same and only the strides of
the 4-D tensors they return differ.

Plans and the private copy are kept on the model itself (an attribute that is
neither copied nor pickled), so they die with the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from .groups import layer_groups
from .pattern import Pattern, Phase

LossFn = Callable[[Tensor, Tensor], Tensor]
Params = dict[str, Tensor]


_Slot = tuple[nn.Module, str, bool]  # owning module, attribute, is a buffer


@dataclass(frozen=True)
class StagePart:
    """Stages of the model, run with given tensors; knows the model names of its tensors.

    ``functional_call`` re-binds every tensor through a context manager on each
    call. When the model allows it (no tied or parametrized weights), a part
    also holds the same stages of a private copy of the model (the *shadow*)
    and binds tensors by writing them straight into the copy's parameter
    dictionaries, which costs far less per inner step. Both give the same
    result; the model itself is never touched.
    """

    module: nn.Module
    param_names: tuple[tuple[str, str], ...]  # (name in module, name in model)
    buffer_names: tuple[tuple[str, str], ...]
    shadow: nn.Module | None = None
    slots: tuple[tuple[str, _Slot], ...] = ()

    def __call__(self, tensors: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Runs the part on ``x`` with ``tensors`` (by local name)."""
        if self.shadow is None:
            return functional_call(self.module, dict(tensors), (x,))
        for local, (owner, attr, is_buffer) in self.slots:
            (owner._buffers if is_buffer else owner._parameters)[attr] = tensors[local]
        return self.shadow(x)


@dataclass(frozen=True)
class AdaptationPlan:
    """How one pattern's flags run on one model (steps do not matter).

    Attributes:
        flagged: Model parameter names that adapt.
        cut: Number of stages (see :func:`model_stages`) in the frozen prefix.
        prefix: The frozen prefix, run once per adaptation, or None.
        suffix: The part run at every step.
    """

    flagged: tuple[str, ...]
    cut: int
    prefix: StagePart | None
    suffix: StagePart


class _ModelCache:
    """Per-model adaptation state: plans by (flags, modes) and the private copy.

    Stored in the model's ``__dict__`` so that it lives and dies with the
    model; ``copy.deepcopy`` and pickling give an empty cache, so a copied or
    saved model never carries another model's copy.
    """

    def __init__(self) -> None:
        self.plans: dict[tuple[tuple[bool, ...], tuple[bool, ...]], AdaptationPlan] = {}
        self.parts: dict[tuple[int, int], StagePart] = {}
        self.shadow: nn.Module | None = None
        self.shadow_checked = False
        self.shadow_modes: tuple[bool, ...] = ()
        self.convolves: bool | None = None
        self.laid_out: tuple[tuple[tuple[int, int], ...], Params] | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> _ModelCache:
        return _ModelCache()

    def __reduce__(self) -> tuple[type[_ModelCache], tuple[()]]:
        return _ModelCache, ()


_CACHE_ATTR = "_patternsearch_adaptation_cache"


def _cache(model: nn.Module) -> _ModelCache:
    cache = model.__dict__.get(_CACHE_ATTR)
    if cache is None:
        cache = _ModelCache()
        object.__setattr__(model, _CACHE_ATTR, cache)
    return cache


def _modes(model: nn.Module) -> tuple[bool, ...]:
    return tuple(m.training for m in model.modules())


def channels_last(tensor: Tensor) -> Tensor:
    """``tensor`` with explicit channels-last strides (a copy unless it has them already).

    For one channel (Omniglot) ``contiguous(memory_format=channels_last)``
    keeps the NCHW strides, which count as channels-last too, and the whole
    forward then runs NCHW with a weight reorder per convolution; a copy made
    with ``clone(memory_format=...)`` has the channel stride 1 that oneDNN reads.
    """
    if tensor.stride(1) == 1 and tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor
    return tensor.clone(memory_format=torch.channels_last)


def convolves(model: nn.Module) -> bool:
    """Whether ``model`` has 2-D convolutions (which the CPU runs faster channels-last)."""
    cache = _cache(model)
    if cache.convolves is None:
        cache.convolves = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return cache.convolves


def preferred_layout(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` runs faster on ``x`` in channels-last: 4-D CPU inputs of a model with 2-D convolutions."""
    return x.dim() == 4 and x.device.type == "cpu" and convolves(model)


def laid_out(params: Mapping[str, Tensor]) -> Params:
    """``params`` with every 4-D tensor channels-last (:func:`channels_last`), others as they are."""
    return {name: channels_last(t) if t.dim() == 4 else t for name, t in params.items()}


def _model_params(model: nn.Module, layout: bool) -> Params:
    """The model's parameters, detached; channels-last copies when ``layout``, kept until a parameter changes."""
    if not layout:
        return {n: p.detach() for n, p in model.named_parameters()}
    cache = _cache(model)
    key = tuple((id(p), p._version) for p in model.parameters())
    if cache.laid_out is None or cache.laid_out[0] != key:
        cache.laid_out = key, laid_out({n: p.detach() for n, p in model.named_parameters()})
    return dict(cache.laid_out[1])


def _is_random(module: nn.Module) -> bool:
    """A module that draws random numbers in training mode (dropout, drop-path, drop-block)."""
    return module.training and (isinstance(module, nn.modules.dropout._DropoutNd)
                                or "Drop" in type(module).__name__)


def draws_random(model: nn.Module) -> bool:
    """Whether a module of ``model`` draws random numbers in its current mode (dropout in training mode)."""
    return any(_is_random(m) for m in model.modules())


def updates_running_statistics(model: nn.Module) -> bool:
    """Whether a batch norm of ``model`` updates its running statistics in its current mode."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
               for m in model.modules())


def _stages(module: nn.Module) -> Iterator[nn.Module]:
    if isinstance(module, nn.Sequential):
        for child in module.children():
            yield from _stages(child)
    else:
        yield module


def model_stages(model: nn.Module) -> list[nn.Module]:
    """The model as a chain of stages: nested ``nn.Sequential`` flattened, else the model itself."""
    return list(_stages(model))


def _shadow(model: nn.Module) -> nn.Module | None:
    """A private copy of the model whose tensors can be re-bound cheaply, or None if that is unsafe."""
    cache = _cache(model)
    if not cache.shadow_checked:
        cache.shadow_checked = True
        shared = len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.named_parameters()))
        parametrized = any(parametrize.is_parametrized(m) for m in model.modules())
        try:
            cache.shadow = None if shared or parametrized else copy.deepcopy(model)
        except Exception:  # a module that cannot be copied: use functional_call
            cache.shadow = None
    return cache.shadow


def _sync_modes(model: nn.Module, modes: tuple[bool, ...]) -> None:
    """Puts every module of the private copy in its model counterpart's mode."""
    cache = _cache(model)
    if cache.shadow is not None and cache.shadow_modes != modes:
        for original, copied in zip(model.modules(), cache.shadow.modules(), strict=True):
            copied.training = original.training
        cache.shadow_modes = modes


def _select(model: nn.Module, start: int, end: int) -> nn.Module:
    stages = model_stages(model)
    return model if (start, end) == (0, len(stages)) else nn.Sequential(*stages[start:end])


def _slot(module: nn.Module, local: str, is_buffer: bool) -> _Slot:
    owner, _, attr = local.rpartition(".")
    return module.get_submodule(owner), attr, is_buffer


def stage_part(model: nn.Module, start: int, end: int) -> StagePart:
    """Stages ``start:end`` of the model as one part (built once per model)."""
    parts = _cache(model).parts
    if (start, end) not in parts:
        parts[(start, end)] = _build_part(model, start, end)
    return parts[(start, end)]


def _build_part(model: nn.Module, start: int, end: int) -> StagePart:
    module = _select(model, start, end)
    names = {id(p): n for n, p in model.named_parameters()}
    buffer_names = {id(b): n for n, b in model.named_buffers()}
    params = tuple((name, names[id(p)]) for name, p in module.named_parameters())
    buffers = tuple((name, buffer_names[id(b)]) for name, b in module.named_buffers())
    shadow_model = _shadow(model)
    if shadow_model is None:
        return StagePart(module, params, buffers)
    shadow = _select(shadow_model, start, end)
    slots = tuple((local, _slot(shadow, local, False)) for local, _ in params)
    slots += tuple((local, _slot(shadow, local, True)) for local, _ in buffers)
    return StagePart(module, params, buffers, shadow, slots)


def _build_plan(model: nn.Module, flags: tuple[bool, ...]) -> AdaptationPlan:
    groups = layer_groups(model)
    if len(flags) != len(groups):
        raise ValueError(f"pattern has {len(flags)} flags but the model has {len(groups)} layer groups")
    flagged = tuple(name for group, flag in zip(groups, flags, strict=True) if flag for name in group.params)
    flagged_set = set(flagged)
    model_names = {id(p): name for name, p in model.named_parameters()}
    stages = model_stages(model)
    cut = 0
    for stage in stages:
        if any(model_names[id(p)] in flagged_set for p in stage.parameters()):
            break
        if any(_is_random(m) for m in stage.modules()):  # must run at every step, like the naive loop
            break
        cut += 1
    if cut == 0 or cut == len(stages):
        return AdaptationPlan(flagged, 0, None, stage_part(model, 0, len(stages)))
    return AdaptationPlan(flagged, cut, stage_part(model, 0, cut), stage_part(model, cut, len(stages)))


def adaptation_plan(model: nn.Module, pattern: Pattern | tuple[bool, ...]) -> AdaptationPlan:
    """Returns the (cached) plan for running flags on ``model`` in its current modes.

    Args:
        model: The network.
        pattern: A pattern (its plan covers the groups flagged in any phase:
            its prefix is frozen in every phase) or one phase's flags.
    """
    flags = pattern.flags if isinstance(pattern, Pattern) else pattern
    modes = _modes(model)
    plans = _cache(model).plans
    plan = plans.get((flags, modes))
    if plan is None:
        plan = plans[(flags, modes)] = _build_plan(model, flags)
    _sync_modes(model, modes)
    return plan


def part_tensors(part: StagePart, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The part's tensors by local name, taken from model-named ``params`` and ``buffers``."""
    tensors = {local: params[name] for local, name in part.param_names}
    tensors.update({local: buffers[name] for local, name in part.buffer_names})
    return tensors


def copied_buffers(model: nn.Module) -> Params:
    """Copies of the model's buffers, so functional calls never modify it."""
    return {name: b.clone() for name, b in model.named_buffers()}


def functional_forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, *, layout: bool = True) -> Tensor:
    """Runs ``model`` on ``x`` with ``params`` and copies of its buffers.

    Args:
        model: The network.
        params: Parameter tensors by name (e.g. the output of :func:`adapt`).
        x: Input batch.
        layout: Convert to the faster layout (:func:`preferred_layout`);
            False runs the tensors as given, as a plain PyTorch call does.

    Returns:
        The model output. The model itself is left unchanged.
    """
    if layout and preferred_layout(model, x):
        x, params = channels_last(x), laid_out(params)
    return functional_call(model, {**params, **copied_buffers(model)}, (x,))


def _check_loss(loss: Tensor) -> None:
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"non-finite inner-loop loss ({loss.item()}); is the inner learning rate too high?")


def check_finite_params(params: Mapping[str, Tensor]) -> None:
    """Raises FloatingPointError when adapted parameters hold NaN or infinite values (one host sync).

    Raises:
        FloatingPointError: Naming the first bad tensor.
    """
    for name, tensor in params.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"adaptation diverged: {name} is not finite; is the inner learning rate too high?")


@dataclass(frozen=True)
class _Differentiation:
    """How the inner loop differentiates: ``create_graph`` (second order), ``first_order``, and the final check."""

    create_graph: bool = False
    first_order: bool = False
    check_finite: bool = True


def _run_suffix_steps(plan: AdaptationPlan, suffix: Mapping[str, Tensor], features: Tensor, y: Tensor, steps: int,
                      inner_lr: float, loss_fn: LossFn, how: _Differentiation) -> Params:
    """The inner SGD loop on the suffix, from features after the frozen prefix.

    Args:
        plan: The pattern's plan.
        suffix: The suffix's tensors by local name (parameters and buffers).
        features: Support-set features after the prefix (the inputs if none).
        y: Support targets.
        steps: Inner steps.
        inner_lr: SGD learning rate.
        loss_fn: Loss.
        how: Second-order or first-order MAML, and whether to check the last
            loss (a host sync on a GPU).

    Returns:
        The suffix's tensors by local name, flagged ones adapted.
    """
    create_graph, first_order, check_finite = how.create_graph, how.first_order, how.check_finite
    differentiable = create_graph or first_order
    local_of = {name: local for local, name in plan.suffix.param_names}
    flagged_local = [local_of[name] for name in plan.flagged]
    fast = [suffix[local] for local in flagged_local]
    if not differentiable:  # fresh leaves: the caller's tensors never get requires_grad set
        fast = [t.detach() for t in fast]
    loss = None
    with torch.enable_grad():
        for _ in range(steps):
            if not differentiable:
                fast = [t.requires_grad_() for t in fast]
            tensors = dict(suffix)
            tensors.update(zip(flagged_local, fast, strict=True))
            loss = loss_fn(plan.suffix(tensors, features), y)
            grads = torch.autograd.grad(loss, fast, create_graph=create_graph, retain_graph=differentiable)
            if differentiable:
                fast = [t - inner_lr * g for t, g in zip(fast, grads, strict=True)]
            else:
                with torch.no_grad():
                    fast = list(torch._foreach_add(fast, grads, alpha=-inner_lr))
    if loss is not None and check_finite:
        _check_loss(loss)  # a divergence at any step leaves the last loss non-finite
    adapted = dict(suffix)
    adapted.update(zip(flagged_local, fast, strict=True))
    return adapted


def run_phases(
    model: nn.Module,
    phases: Sequence[Phase],
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    features: Tensor,
    cut: int,
    y: Tensor,
    inner_lr: float,
    loss_fn: LossFn,
    *,
    create_graph: bool = False,
    first_order: bool = False,
    check_finite: bool = True,
) -> Params:
    """The inner loop of ``phases`` in order, from support features after the first ``cut`` stages.

    Each phase differentiates only its own flagged groups (backward stops at
    the earliest of them) at ``inner_lr`` times its scale. Stages between
    ``cut`` and the phase's own frozen prefix run once at the start of the
    phase, with the values earlier phases left.

    Args:
        model: The network.
        phases: The phases to run (no-op phases are skipped).
        params: Current parameters by model name (at least those of the
            stages from ``cut`` on).
        buffers: Buffers by model name (copies; batch norm may update them).
        features: Support features after the first ``cut`` stages.
        cut: Stages already applied; at most every phase's prefix length
            (the plan of the whole pattern has that cut).
        y: Support targets.
        inner_lr: The checkpoint's inner learning rate.
        loss_fn: Loss.
        create_graph: Second-order MAML.
        first_order: First-order MAML.
        check_finite: Check each phase's last loss (a host sync on a GPU).

    Returns:
        ``params`` with the flagged parameters of every phase updated.
    """
    current = dict(params)
    differentiable = create_graph or first_order
    for phase in phases:
        if phase.is_noop:
            continue
        plan = adaptation_plan(model, phase.flags)
        phase_features = features
        if plan.cut > cut:  # frozen during this phase, changed (maybe) by earlier ones: run once now
            middle = stage_part(model, cut, plan.cut)
            with torch.set_grad_enabled(torch.is_grad_enabled() and differentiable):
                phase_features = middle(part_tensors(middle, current, buffers), features)
        suffix = _run_suffix_steps(
            plan, part_tensors(plan.suffix, current, buffers), phase_features, y, phase.steps, inner_lr * phase.scale,
            loss_fn, _Differentiation(create_graph, first_order, check_finite),
        )
        current.update({name: suffix[local] for local, name in plan.suffix.param_names})
    return current


def adapt(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    pattern: Pattern | str,
    inner_lr: float,
    loss_fn: LossFn | None = None,
    *,
    params: Mapping[str, Tensor] | None = None,
    create_graph: bool = False,
    first_order: bool = False,
    check_finite: bool = True,
    layout: bool = True,
) -> Params:
    """Adapts the flagged layer groups to a support set with SGD, phase by phase.

    Each step computes the loss on the support set with the current
    parameters, the gradient for the current phase's flagged groups only, and
    an SGD update at ``inner_lr`` times the phase's scale. Parameters no phase
    flags keep their values bit for bit.

    Args:
        model: The meta-trained network; it is not modified.
        x: Support inputs.
        y: Support targets.
        pattern: Which groups adapt, for how many steps, in which phases (a
            Pattern or its text; ``full`` needs a checkpoint's step count, so
            pass ``Experiment.pattern("full")`` or explicit text).
        inner_lr: SGD learning rate of the inner loop (scaled per phase).
        loss_fn: ``loss_fn(output, target) -> scalar``; cross-entropy by default.
        params: Starting parameters (default: the model's, detached). Meta-
            training passes the live parameters to differentiate through.
        create_graph: Keep the graph of the inner gradients (second-order MAML).
        first_order: Differentiate through the updates but not through the
            inner gradients (first-order MAML); ignored when ``create_graph``.
        check_finite: Raise on a non-finite inner loss. That check copies a
            value to the host; timing turns it off and checks the result
            afterwards (:func:`check_finite_params`).
        layout: Convert to the faster layout (:func:`preferred_layout`);
            False runs the tensors as given.

    Returns:
        Parameters by name (all of them), for ``torch.func.functional_call``.
        Detached unless ``create_graph`` or ``first_order`` is set. On the
        CPU the 4-D weights of a convolutional model come back channels-last
        (see the module doc), the layout :func:`functional_forward` uses.

    Raises:
        FloatingPointError: If the inner loss becomes NaN or infinite.
    """
    differentiable = create_graph or first_order
    if not isinstance(pattern, Pattern):
        pattern = Pattern.parse(pattern, num_groups=len(layer_groups(model)))
    layout = layout and preferred_layout(model, x)
    if layout:
        x = channels_last(x)
    start = _model_params(model, layout) if params is None else laid_out(params) if layout else dict(params)
    if pattern.is_none:
        return start
    plan = adaptation_plan(model, pattern)
    buffers = copied_buffers(model)
    features = x
    if plan.prefix is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and differentiable):
            features = plan.prefix(part_tensors(plan.prefix, start, buffers), x)
    adapted = run_phases(
        model, pattern.canonical().phases, start, buffers, features, plan.cut, y, inner_lr,
        loss_fn or F.cross_entropy, create_graph=create_graph, first_order=first_order, check_finite=check_finite,
    )
    if not differentiable:
        for name in plan.flagged:
            adapted[name] = adapted[name].detach()
    return adapted
