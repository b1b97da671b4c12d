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

from .benchmarks import Benchmark, atomic_write_bytes, cache_home
from .errors import CheckpointError
from .models import create_model
from .spec import ExperimentSpec

FORMAT = "patternsearch-checkpoint-v1"
ADAPT_MODES = ("train", "eval")


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
        mode: The module mode adaptation runs in: ``train`` (batch statistics
            in batch norm, MAML's transductive setting; dropout on) or
            ``eval`` (running statistics; dropout off).
        pattern: The inner-loop pattern it was meta-trained with (``train
            --pattern``, ``specialize``); None for full MAML at
            ``train_steps``. The ``full`` baseline stays every group at
            ``eval_steps``.
        parent: For a specialized checkpoint, the one it continued from:
            ``{"sha256", "path", "pattern"}``; empty otherwise.
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
    mode: str = "train"
    pattern: str | None = None
    parent: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        benchmark: Benchmark,
        model_name: str,
        ways: int,
        shots: int,
        inner_lr: float,
        eval_steps: int,
        train_steps: int | None = None,
        mode: str = "train",
        source: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """A checkpoint of a model meta-trained elsewhere.

        Args:
            model: The model, weights loaded; ``create_model(model_name, ...)``
                must rebuild it.
            benchmark: The benchmark it was meta-trained for.
            model_name: Registered name or plug-in reference of its factory.
            ways: Classes per episode.
            shots: Support examples per class.
            inner_lr: Its inner-loop learning rate.
            eval_steps: Inner steps of its evaluation protocol (``full``).
            train_steps: Inner steps it was meta-trained with, if known.
            mode: ``train`` or ``eval``: the mode adaptation runs in.
            source: Where the weights came from (recorded in ``config``).

        Raises:
            CheckpointError: Bad learning rate, step counts or mode.
        """
        if not inner_lr > 0:
            raise CheckpointError(f"the inner learning rate must be > 0, got {inner_lr}")
        if eval_steps < 1 or (train_steps is not None and train_steps < 1):
            raise CheckpointError(f"step counts must be >= 1, got eval {eval_steps}, train {train_steps}")
        if mode not in ADAPT_MODES:
            raise CheckpointError(f"mode must be one of {', '.join(ADAPT_MODES)}, got {mode!r}")
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        config = {"benchmark": benchmark.name, "model": model_name, "ways": ways, "shots": shots,
                  "inner_lr": inner_lr, "eval_steps": eval_steps, "train_steps": train_steps,
                  "imported_from": source or {}}
        return cls(model=model_name, benchmark=benchmark.name, ways=ways, shots=shots, inner_lr=inner_lr,
                   train_steps=train_steps or 0, eval_steps=eval_steps, state_dict=state, config=config, mode=mode)

    def last_val_score(self) -> float:
        """The validation score of its last validation (NaN when it was never validated)."""
        return float(self.history[-1].get("val_score", float("nan"))) if self.history else float("nan")

    def spec(self, path: str | Path, *, data_root: str | None = None, device: str = "auto") -> ExperimentSpec:
        """The experiment this checkpoint was made for, read from ``path``."""
        return ExperimentSpec(
            benchmark=self.benchmark, model=self.model, ways=self.ways, shots=self.shots,
            queries=int(self.config.get("queries", 15)), data_root=data_root,
            benchmark_options=dict(self.config.get("benchmark_options", {})), checkpoint=str(path), device=device)

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
        return net.train(self.mode == "train")


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


def shipped_folder() -> Path:
    """The installed package's checkpoint folder: package data, read-only to patternsearch."""
    return Path(str(resources.files("patternsearch") / "checkpoints"))


def check_writable(path: str | Path) -> None:
    """Refuses a path in the installed package's checkpoint folder: package data is never written.

    Raises:
        CheckpointError: If ``path`` is there (a changed shipped checkpoint
            would orphan every study recorded against it).
    """
    if Path(path).resolve().parent == shipped_folder().resolve():
        raise CheckpointError(f"{path} is a checkpoint shipped with the package, which is never written; "
                              "pass --checkpoint (or --out) with a path of your own")


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> None:
    """Writes the checkpoint atomically (readers see the old or the new file).

    Raises:
        CheckpointError: If ``path`` is package data (:func:`check_writable`).
        OSError: The file system failed (a full disk); ``filename`` is ``path``,
            which still holds its previous content (or does not exist).
    """
    path = Path(path)
    check_writable(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **asdict(checkpoint)}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:  # e.g. a full disk: the previous file, if any, is intact; named in the error
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def read_torch_file(path: str | Path) -> Any:
    """Loads a file written by ``torch.save`` with ``weights_only=True``: tensors and plain containers, no code.

    Raises:
        CheckpointError: One line, for a missing, truncated or corrupted
            file, or one that holds pickled Python objects (a whole model),
            which are never unpickled because that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(error)
        if "Unsupported global" in text:
            raise CheckpointError(
                f"{path} holds pickled Python objects (a whole model?), which are not loaded because unpickling "
                "runs code; save the weights instead: torch.save(model.state_dict(), PATH)") from None
        first = text.strip().splitlines()[0][:120] if text.strip() else type(error).__name__
        raise CheckpointError(f"cannot read {path}: truncated or corrupted ({first})") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Loads a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: One line, for a missing, truncated, corrupted or
            foreign file.
    """
    data = read_torch_file(path)
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
    path = shipped_folder() / checkpoint_filename(benchmark, model, ways, shots)
    return path if path.is_file() else None


def default_checkpoint_path(benchmark: str, model: str, ways: int, shots: int) -> Path:
    """The shipped checkpoint if there is one, else ``<cache>/checkpoints/<name>.pt``."""
    shipped = shipped_checkpoint(benchmark, model, ways, shots)
    if shipped is not None:
        return shipped
    return cache_home() / "checkpoints" / checkpoint_filename(benchmark, model, ways, shots)
