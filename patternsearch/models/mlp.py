"""The 1-40-40-1 regression network of Finn et al. (2017) for sinusoids."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ._registry import register_model


@register_model("mlp")
def mlp(num_classes: int = 1, input_shape: Sequence[int] = (1,), hidden: int = 40) -> nn.Module:
    """Two hidden ReLU layers; ``num_classes`` is the output size."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(int(input_shape[-1]), hidden),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, hidden),
            relu2=nn.ReLU(),
            head=nn.Linear(hidden, num_classes),
        )
    )
