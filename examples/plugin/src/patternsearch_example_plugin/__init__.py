"""A model and a benchmark for patternsearch, published through entry points."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from patternsearch.benchmarks import Benchmark, Task, TrainingDefaults, negative_mse, split_stream, task_rng


def tiny_convnet(num_classes: int, input_shape: Sequence[int] = (1, 16, 16), width: int = 8) -> nn.Module:
    """Two conv blocks and a linear head; 3 layer groups."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1), nn.GroupNorm(2, width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(2, width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(width, num_classes),
    )


class _SquareWaves:
    """Regression: y = A * sign(sin(x - phase)) smoothed, from K points."""

    def __init__(self, shots: int, queries: int, split: str) -> None:
        self.shots, self.queries, self.stream = shots, queries, split_stream(split)

    def task(self, index: int, seed: int) -> Task:
        rng = task_rng(seed, self.stream, index)
        amplitude, phase = rng.uniform(0.5, 2.0), rng.uniform(0.0, math.pi)
        x = torch.from_numpy(rng.uniform(-4.0, 4.0, size=(self.shots + self.queries, 1))).float()
        y = amplitude * torch.tanh(4 * torch.sin(x - phase))
        return Task(x[: self.shots], y[: self.shots], x[self.shots :], y[self.shots :])


def square_waves(ways: int = 1, shots: int = 10, queries: int = 10,
                 data_root: str | os.PathLike[str] | None = None) -> Benchmark:
    """Square-wave regression; the score is negative MSE."""
    del ways, data_root
    return Benchmark(
        name="square-waves",
        splits={split: _SquareWaves(shots, queries, split) for split in ("train", "val", "test")},
        input_shape=(1,),
        num_outputs=1,
        loss_fn=F.mse_loss,
        score_fn=negative_mse,
        metric="neg_mse",
        default_model="mlp",
        defaults=TrainingDefaults(inner_lr=0.01, train_steps=1, eval_steps=5, meta_batch=8, meta_lr=1e-3,
                                  iterations=200),
    )
