"""The model registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..registry import PluginError, Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model", "patternsearch.models")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Registers ``factory(num_classes, **kwargs) -> nn.Module`` under ``name``.

    A factory may also accept ``input_shape`` (channels, height, width or the
    feature count); benchmarks pass it when the factory's signature takes it.
    """
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered (and plug-in) models matching ``pattern``."""
    return MODELS.names(pattern)


def _accepts(factory: ModelFactory, keyword: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def create_model(
    name: str, num_classes: int, *, input_shape: Sequence[int] | None = None, **kwargs: object
) -> nn.Module:
    """Builds a model by registered name, entry point or ``module:function``.

    Args:
        name: Model name or plug-in reference.
        num_classes: Output size (ways, or 1 for regression).
        input_shape: Shape of one input example; passed on when the factory
            accepts it.
        **kwargs: Factory options; ``None`` values are dropped so that unset
            command-line options never override a model's defaults.

    Raises:
        PluginError: Unknown name, failing plug-in, or a factory that does
            not return an ``nn.Module``.
    """
    factory = MODELS.get(name)
    options = {k: v for k, v in kwargs.items() if v is not None}
    if input_shape is not None and _accepts(factory, "input_shape"):
        options["input_shape"] = tuple(input_shape)
    try:
        model = factory(num_classes, **options)
    except Exception as error:
        raise PluginError(f"model {name!r} failed to build: {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise PluginError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    if input_shape is not None:
        _check_output(model, name, num_classes, input_shape)
    return model


def _check_output(model: nn.Module, name: str, num_classes: int, input_shape: Sequence[int]) -> None:
    """Refuses a model whose output does not have ``num_classes`` values per example."""
    probe = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            output = model(probe)
    except Exception as error:
        raise PluginError(f"model {name!r} fails on inputs of shape {tuple(input_shape)}: "
                          f"{type(error).__name__}: {error}") from None
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, num_classes):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise PluginError(f"model {name!r} outputs {shape} for a batch of 2, but the benchmark needs {num_classes} "
                          "outputs per example")
