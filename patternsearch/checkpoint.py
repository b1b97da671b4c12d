"""Checkpoints: meta-trained weights plus the configuration that made them.

Checkpoints are written atomically and loaded with ``torch.load(...,
weights_only=True)``, so loading one never runs code.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .benchmarks import Benchmark, cache_home
from .benchmarks._archives import atomic_write_bytes
from .models import create_model

FORMAT = "patternsearch-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


@dataclass
class Checkpoint:
    """A meta-trained model and how it was trained.

    Attributes:
        model: Model name (or plug-in reference).
        benchmark: Benchmark it was trained on.
        ways: Classes per episode.
        shots: Support examples per class.
        inner_lr: Inner-loop learning rate.
        train_steps: Inner steps used in meta-training.
        eval_steps: Inner steps of the evaluation protocol (the ``full``
            pattern's step count).
        state_dict: The weights.
        config: Every training setting (for reproducibility and resuming).
        history: Validation records ``{"iteration", "val_score", ...}``.
        training: Optimizer state and progress while (re)training; kept so a
            run can be extended.
    """

    model: str
    benchmark: str
    ways: int
    shots: int
    inner_lr: float
    train_steps: int
    eval_steps: int
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def build_model(self, benchmark: Benchmark, model: str | None = None) -> nn.Module:
        """Creates the model for ``benchmark`` and loads the weights.

        Args:
            benchmark: Gives the output size and input shape.
            model: Build this model instead of the recorded one (its
                parameters must match the checkpoint's).

        Raises:
            CheckpointError: If the checkpoint's keys or shapes do not match
                the model (the message names the mismatching keys).
        """
        name = model or self.model
        net = create_model(
            name, num_classes=benchmark.num_outputs, input_shape=benchmark.input_shape,
            **self.config.get("model_kwargs", {}),
        )
        load_weights(net, self.state_dict, name)
        return net


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], name: str) -> None:
    """Loads ``state_dict`` into ``model``, naming any mismatching keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}")
        if wrong:
            parts.append(f"shape mismatch {', '.join(wrong[:6])}")
        raise CheckpointError(f"checkpoint does not fit model {name!r}: {'; '.join(parts)}")
    model.load_state_dict(state_dict)


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> None:
    """Writes the checkpoint atomically (readers see the old or the new file)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **asdict(checkpoint)}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Loads a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: One line, for a missing, truncated, corrupted or
            foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupted ({reason[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a patternsearch checkpoint")
    data.pop("format")
    try:
        return Checkpoint(**data)
    except TypeError as error:
        raise CheckpointError(f"{path} is not a patternsearch checkpoint ({error})") from None


def file_checksum(path: str | Path) -> str:
    """sha256 of a file (identifies a checkpoint in a study's configuration)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checkpoint_filename(benchmark: str, model: str, ways: int, shots: int) -> str:
    """File name of the default checkpoint for a configuration."""
    raw = f"{benchmark}-{model}-{ways}w{shots}s"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw) + ".pt"


def shipped_checkpoint(benchmark: str, model: str, ways: int, shots: int) -> Path | None:
    """The checkpoint installed with the package for this configuration, if any."""
    candidate = resources.files("patternsearch") / "checkpoints" / checkpoint_filename(benchmark, model, ways, shots)
    path = Path(str(candidate))
    return path if path.is_file() else None


def default_checkpoint_path(benchmark: str, model: str, ways: int, shots: int) -> Path:
    """The shipped checkpoint if there is one, else ``<cache>/checkpoints/<name>.pt``."""
    shipped = shipped_checkpoint(benchmark, model, ways, shots)
    if shipped is not None:
        return shipped
    return cache_home() / "checkpoints" / checkpoint_filename(benchmark, model, ways, shots)
