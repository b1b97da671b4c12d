"""The four-block convolutional network of Finn et al. (2017)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ._registry import register_model


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            norm=nn.BatchNorm2d(out_channels, track_running_stats=False),
            relu=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


class Conv4(nn.Sequential):
    """4 x [3x3 conv, batch norm on batch statistics, ReLU, 2x2 max-pool] + linear.

    Batch norm never tracks running statistics: it normalises with the
    current batch, as in the transductive setting of Finn et al.

    Args:
        num_classes: Number of outputs.
        input_shape: (channels, height, width) of one image.
        hidden: Channels of every conv layer.
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int] = (1, 28, 28), hidden: int = 64) -> None:
        channels = int(input_shape[0])
        blocks = OrderedDict(
            (f"block{i + 1}", _block(channels if i == 0 else hidden, hidden)) for i in range(4)
        )
        features = nn.Sequential(*blocks.values())
        with torch.no_grad():
            width = features(torch.zeros(2, *input_shape)).flatten(1).shape[1]
        super().__init__(OrderedDict(**blocks, flatten=nn.Flatten(), head=nn.Linear(width, num_classes)))


@register_model("conv4")
def conv4(num_classes: int, input_shape: Sequence[int] = (1, 28, 28), hidden: int = 64) -> nn.Module:
    """Finn et al.'s Conv-4 (64 channels by default)."""
    return Conv4(num_classes, input_shape, hidden)
