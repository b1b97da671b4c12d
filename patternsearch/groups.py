"""Layer groups: the units a Lambda pattern switches on or off.

Default grouping: every module that owns parameters directly, in registration
order, is a group, except normalization layers, which join the group before
them. A model overrides this by defining ``layer_groups(self)`` that returns a
list of ``(group_name, parameter_names)`` pairs; every parameter must be in
exactly one group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import GroupingError

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


@dataclass(frozen=True)
class LayerGroup:
    """An ordered set of parameters that adapt (or stay frozen) together.

    Attributes:
        name: Readable name, by default the path of the group's first module.
        params: Full parameter names, as in ``model.named_parameters()``.
    """

    name: str
    params: tuple[str, ...]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def _default_groups(model: nn.Module) -> list[LayerGroup]:
    names: list[str] = []
    params: list[list[str]] = []
    for module_name, module in model.named_modules():
        own = [name for name, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        full = [f"{module_name}.{name}" if module_name else name for name in own]
        if _is_norm(module) and params:
            params[-1].extend(full)
        else:
            names.append(module_name or type(module).__name__)
            params.append(full)
    return [LayerGroup(name, tuple(p)) for name, p in zip(names, params, strict=True)]


def _custom_groups(model: nn.Module, spec: Sequence[tuple[str, Sequence[str]]]) -> list[LayerGroup]:
    return [LayerGroup(str(name), tuple(params)) for name, params in spec]


def _validate(model: nn.Module, groups: list[LayerGroup]) -> None:
    if not groups:
        raise GroupingError(f"{type(model).__name__} has no parameters to group")
    expected = [name for name, _ in model.named_parameters()]
    seen: dict[str, str] = {}
    for group in groups:
        for param in group.params:
            if param in seen:
                raise GroupingError(f"parameter {param!r} is in groups {seen[param]!r} and {group.name!r}")
            seen[param] = group.name
    unknown = sorted(set(seen) - set(expected))
    if unknown:
        raise GroupingError(f"layer groups name unknown parameters: {', '.join(unknown)}")
    missing = [name for name in expected if name not in seen]
    if missing:
        raise GroupingError(f"parameters in no layer group: {', '.join(missing)}")


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Returns the model's ordered layer groups.

    Args:
        model: Any module. If it defines ``layer_groups()``, that grouping is
            used (and validated); otherwise the default grouping applies.

    Returns:
        The groups in order; every parameter is in exactly one group.

    Raises:
        GroupingError: If a custom grouping misses or repeats a parameter.
    """
    custom = getattr(model, "layer_groups", None)
    groups = _custom_groups(model, custom()) if callable(custom) else _default_groups(model)
    _validate(model, groups)
    return groups


@dataclass(frozen=True)
class GroupSummary:
    """One row of ``patternsearch groups``."""

    index: int
    name: str
    parameters: int
    flops_share: float


def group_summaries(model: nn.Module, example: torch.Tensor) -> list[GroupSummary]:
    """Parameter count and share of forward FLOPs of each layer group.

    Args:
        model: The model.
        example: An input batch to count the forward FLOPs on.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(example)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total = counts.get("Global", 0) or 1
    root = type(model).__name__
    params = dict(model.named_parameters())
    rows = []
    for index, group in enumerate(layer_groups(model)):
        modules = {name.rpartition(".")[0] for name in group.params}
        flops = sum(counts.get(f"{root}.{module}" if module else root, 0) for module in modules)
        rows.append(GroupSummary(index, group.name, sum(params[p].numel() for p in group.params), flops / total))
    return rows
