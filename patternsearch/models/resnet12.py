"""ResNet-12, the few-shot standard (4 residual blocks, 64-160-320-640 channels)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ._registry import register_model


def _conv_bn(in_channels: int, out_channels: int, kernel: int) -> list[tuple[str, nn.Module]]:
    return [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)),
        ("norm", nn.BatchNorm2d(out_channels, track_running_stats=False)),
    ]


class ResidualBlock(nn.Module):
    """3 x (3x3 conv, batch norm, leaky ReLU) plus a 1x1 conv shortcut, then a 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(OrderedDict(_conv_bn(in_channels, out_channels, 3)))
        self.layer2 = nn.Sequential(OrderedDict(_conv_bn(out_channels, out_channels, 3)))
        self.layer3 = nn.Sequential(OrderedDict(_conv_bn(out_channels, out_channels, 3)))
        self.shortcut = nn.Sequential(OrderedDict(_conv_bn(in_channels, out_channels, 1)))
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward pass."""
        out = self.relu(self.layer1(x))
        out = self.relu(self.layer2(out))
        out = self.layer3(out)
        return self.pool(self.relu(out + self.shortcut(x)))


class ResNet12(nn.Sequential):
    """Four residual blocks, global average pooling and a linear head.

    Batch norm uses batch statistics (transductive). The default layer groups
    are the 16 convolutions (with their norms) and the head: 17 groups. Prefix
    features are cached at block boundaries; inside a block, the truncated
    backward alone skips the frozen work.

    Args:
        num_classes: Number of outputs.
        input_shape: (channels, height, width) of one image.
        widths: Channels of the four blocks.
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int] = (3, 84, 84),
                 widths: Sequence[int] = (64, 160, 320, 640)) -> None:
        channels = [int(input_shape[0]), *widths]
        blocks = OrderedDict((f"block{i + 1}", ResidualBlock(channels[i], channels[i + 1])) for i in range(4))
        super().__init__(OrderedDict(
            **blocks, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), head=nn.Linear(channels[-1], num_classes)
        ))


@register_model("resnet12")
def resnet12(num_classes: int, input_shape: Sequence[int] = (3, 84, 84),
             widths: Sequence[int] = (64, 160, 320, 640)) -> nn.Module:
    """ResNet-12 (64-160-320-640)."""
    return ResNet12(num_classes, input_shape, widths)
