"""Sinusoid regression (Finn et al., 2017): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]."""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from ._identity import definition_identity
from ._registry import register_benchmark
from ._tasks import Benchmark, Task, TrainingDefaults, negative_mse, split_stream, task_rng


class SinusoidTasks:
    """Regression episodes ``y = A sin(x - phase)`` with K support and Q query points."""

    def __init__(self, shots: int, queries: int, stream: int) -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be >= 1 (got {shots}, {queries})")
        self.shots, self.queries, self.stream = shots, queries, stream

    def task(self, index: int, seed: int) -> Task:
        """Returns episode ``index`` for ``seed``."""
        rng = task_rng(seed, self.stream, index)
        amplitude = rng.uniform(0.1, 5.0)
        phase = rng.uniform(0.0, math.pi)
        x = torch.from_numpy(rng.uniform(-5.0, 5.0, size=(self.shots + self.queries, 1))).float()
        y = amplitude * torch.sin(x - phase)
        return Task(x[: self.shots], y[: self.shots], x[self.shots :], y[self.shots :])


@register_benchmark("sinusoid")
def sinusoid(
    ways: int = 1, shots: int = 10, queries: int = 10, data_root: str | os.PathLike[str] | None = None
) -> Benchmark:
    """K-shot sinusoid regression; ``ways`` is ignored (one output), the score is -MSE."""
    del ways, data_root
    return Benchmark(
        name="sinusoid",
        splits={split: SinusoidTasks(shots, queries, split_stream(split)) for split in ("train", "val", "test")},
        input_shape=(1,),
        num_outputs=1,
        loss_fn=F.mse_loss,
        score_fn=negative_mse,
        metric="neg_mse",
        default_model="mlp",
        defaults=TrainingDefaults(inner_lr=0.01, train_steps=1, eval_steps=10, meta_batch=25, meta_lr=1e-3),
        identity=_identity,
    )


def _identity(split: str) -> str:
    """The generating definition: every sinusoid benchmark draws the split's tasks from it (shots aside)."""
    return definition_identity({"generated": "y = A sin(x - phase); A ~ U[0.1, 5], phase ~ U[0, pi], "
                                             "x ~ U[-5, 5]; task_rng(seed, stream, index)",
                                "stream": split_stream(split)})
