"""Use the Python API on a custom model: layer groups, pattern adaptation, and a check against the reference.

Run with: python examples/custom_model_api.py
"""

from __future__ import annotations

import torch
from torch import nn

import patternsearch as ps


class SmallResNet(nn.Module):
    """A stem, one residual block with GroupNorm, and a head: not a plain sequence."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.stem_norm = nn.GroupNorm(4, 16)
        self.conv_a = nn.Conv2d(16, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem_norm(self.stem(x)))
        h = torch.relu(h + self.conv_b(torch.relu(self.conv_a(h))))
        return self.head(h.mean(dim=(2, 3)))


def main() -> None:
    torch.manual_seed(0)
    model = SmallResNet()
    for index, group in enumerate(ps.layer_groups(model)):
        print(f"group {index}: {group.name} ({len(group.params)} tensors)")

    x_support, y_support = torch.randn(5, 1, 28, 28), torch.arange(5)
    x_query, y_query = torch.randn(25, 1, 28, 28), torch.arange(5).repeat_interleave(5)
    pattern = ps.Pattern.parse("0011:5", num_groups=len(ps.layer_groups(model)))

    adapted = ps.adapt(model, x_support, y_support, pattern, inner_lr=0.1)
    reference = ps.reference_adapt(model, x_support, y_support, pattern, inner_lr=0.1)
    error = max(float((adapted[k] - reference[k]).norm() / reference[k].norm()) for k in adapted)
    accuracy = float((ps.functional_forward(model, adapted, x_query).argmax(1) == y_query).float().mean())
    print(f"pattern {pattern}: max relative error vs reference {error:.2e}, query accuracy {accuracy:.2f}")
    assert error < 1e-5


if __name__ == "__main__":
    main()
