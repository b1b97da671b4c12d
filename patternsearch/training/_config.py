"""What a meta-training run is asked, and whether a checkpoint on disk may be resumed with it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..benchmarks import Benchmark
from ..checkpoint import (
    Checkpoint,
    CheckpointError,
)
from ..spec import ExperimentSpec

# Settings that may differ when a run is resumed (they do not change the result so far).
_RESUMABLE = {"iterations", "val_every", "checkpoint_every", "device", "data_root"}


@dataclass
class TrainConfig:
    """Meta-training settings. ``None`` means the benchmark's default.

    Attributes:
        benchmark: Benchmark name.
        model: Model name or plug-in reference.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class in training episodes.
        inner_lr: Inner-loop SGD learning rate.
        train_steps: Inner steps during meta-training.
        eval_steps: Inner steps at evaluation (the ``full`` pattern).
        meta_batch: Tasks per meta-update.
        meta_lr: Adam learning rate.
        iterations: Meta-updates in total.
        first_order: First-order MAML instead of second order.
        seed: Seeds the initial weights and the training episodes.
        val_every: Validate every this many iterations, and at the end (0:
            never; ``tune`` scores its candidates itself).
        val_tasks: Validation episodes.
        checkpoint_every: Write the checkpoint every this many iterations.
        model_kwargs: Extra model factory options.
        benchmark_options: Extra benchmark options.
        data_root: Data folder.
        device: ``cpu``, ``cuda`` or ``auto``.
        pattern: Inner-loop pattern text (None: full MAML at ``train_steps``).
        parent_sha256: Checksum of the checkpoint a specialization continues.
    """

    benchmark: str = "omniglot-small"
    model: str | None = None
    ways: int = 5
    shots: int = 1
    queries: int = 15
    inner_lr: float | None = None
    train_steps: int | None = None
    eval_steps: int | None = None
    meta_batch: int | None = None
    meta_lr: float | None = None
    iterations: int | None = None
    first_order: bool = False
    seed: int = 0
    val_every: int = 100
    val_tasks: int = 100
    checkpoint_every: int = 25
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    benchmark_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    device: str = "auto"
    pattern: str | None = None
    parent_sha256: str | None = None

    @classmethod
    def for_spec(cls, spec: ExperimentSpec, **settings: Any) -> TrainConfig:
        """Training settings for an experiment spec; ``settings`` are the training-only fields.

        The spec's checkpoint is where the run is written, not a setting, so
        it is left out.
        """
        return cls(benchmark=spec.benchmark, model=spec.model, ways=spec.ways, shots=spec.shots,
                   queries=spec.queries, data_root=spec.data_root, device=spec.device,
                   benchmark_options=dict(spec.benchmark_options), **settings)

    def resolved(self, benchmark: Benchmark) -> TrainConfig:
        """A copy with every ``None`` replaced by the benchmark's default."""
        defaults = benchmark.defaults
        values = asdict(self)
        values["model"] = self.model or benchmark.default_model
        for name in ("inner_lr", "train_steps", "eval_steps", "meta_batch", "meta_lr", "iterations"):
            if values[name] is None:
                values[name] = getattr(defaults, name)
        if values["data_root"] is not None:
            values["data_root"] = os.fspath(values["data_root"])
        return TrainConfig(**values)


def check_resumable(previous: Checkpoint, config: TrainConfig, mode: str, path: Path) -> None:
    """Refuses to resume a checkpoint with settings that would change the result so far (``_RESUMABLE`` may differ).

    Raises:
        CheckpointError: A setting differs; the message lists each change.
    """
    stored, current, defaults = previous.config, asdict(config), asdict(TrainConfig())
    differences = [
        f"{key}: {stored.get(key, defaults[key])!r} -> {value!r}"
        for key, value in current.items()
        if key not in _RESUMABLE and stored.get(key, defaults[key]) != value
    ]
    if previous.mode != mode:
        differences.append(f"mode: {previous.mode!r} -> {mode!r}")
    if differences:
        raise CheckpointError(
            f"{path} was trained with other settings ({'; '.join(differences)}); "
            "use another --checkpoint path or the same settings"
        )
