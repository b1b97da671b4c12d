"""Bring your own meta-trained model: a state dict saved elsewhere becomes a patternsearch checkpoint.

A MAML script (plain PyTorch, learn2learn, higher, Lightning) usually saves
``torch.save(model.state_dict(), path)``, sometimes inside a dict
(``{"state_dict": ...}``) and sometimes with a wrapper's prefix on every key
(learn2learn's ``module.``, Lightning's ``model.``). :func:`import_checkpoint`
reads such a file with ``weights_only=True`` (no code runs), matches its keys
to the named model, records what the file cannot say (inner learning rate,
evaluation steps, the mode to adapt in), writes the checkpoint atomically and
scores ``full`` on a few validation tasks as a sanity check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, CheckpointError, file_checksum, load_weights, read_torch_file, save_checkpoint
from .experiment import build_benchmark, open_experiment
from .measurement import score_pattern
from .models import create_model
from .spec import ExperimentSpec
from .uncertainty import Estimate, TaskDesign, estimate

NESTED_KEYS = ("state_dict", "model_state_dict", "model")
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a plain one, or one under ``state_dict``/``model_state_dict``/``model``.

    Raises:
        CheckpointError: Missing or unreadable file, a pickled module (which
            is never unpickled: that would run code), or no state dict inside.
    """
    data = read_torch_file(path)
    for candidate in (data, *(data.get(key) for key in NESTED_KEYS if isinstance(data, dict))):
        if _is_state_dict(candidate):
            return dict(candidate)
    keys = ", ".join(sorted(map(str, data))[:8]) if isinstance(data, dict) else type(data).__name__
    raise CheckpointError(f"{path} holds no state dict (found: {keys}); save model.state_dict()")


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def match_keys(state_dict: dict[str, torch.Tensor], expected: set[str],
               strip_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """``state_dict`` with a wrapper prefix removed from its keys when that makes them the model's.

    Args:
        state_dict: Weights as saved.
        expected: The model's state-dict keys.
        strip_prefix: Remove exactly this prefix (from every key that has it);
            default: try no prefix, then the common wrappers'.
    """
    if strip_prefix is not None:
        return {k.removeprefix(strip_prefix): v for k, v in state_dict.items()}
    if set(state_dict) == expected:
        return state_dict
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state_dict):
            stripped = {k[len(prefix):]: v for k, v in state_dict.items()}
            if set(stripped) == expected:
                return stripped
    return state_dict


@dataclass(frozen=True)
class ImportResult:
    """The written checkpoint and its sanity check.

    Attributes:
        checkpoint: What was written.
        path: Where.
        full: Accuracy of ``full`` on the validation tasks scored.
        chance: Chance level of the score (None for regression).
        warning: Set when the accuracy is near chance.
    """

    checkpoint: Checkpoint
    path: Path
    full: Estimate
    chance: float | None
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``import-checkpoint --json`` prints)."""
        return {"checkpoint": str(self.path), "full": self.full.as_dict(), "chance": self.chance,
                "warning": self.warning, "mode": self.checkpoint.mode}

    def describe(self) -> str:
        """The lines ``import-checkpoint`` prints."""
        c = self.checkpoint
        return (f"wrote {self.path} ({c.model} on {c.benchmark}, {c.ways}-way {c.shots}-shot, inner lr "
                f"{c.inner_lr:g}, {c.eval_steps} evaluation steps, mode {c.mode})\n"
                f"  full MAML on validation tasks: {self.full.describe()}")


def import_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    spec: ExperimentSpec,
    *,
    inner_lr: float,
    eval_steps: int,
    train_steps: int | None = None,
    mode: str = "train",
    strip_prefix: str | None = None,
    check_tasks: int = 50,
) -> ImportResult:
    """Turns a foreign state dict into a checkpoint at ``out`` and scores ``full`` on validation tasks.

    Args:
        source: The saved state dict (see :func:`read_state_dict`).
        out: Checkpoint to write (atomically).
        spec: The benchmark the model was meta-trained for, its model (default:
            the benchmark's), ways, shots, the check's queries, data and device
            (its ``checkpoint`` is not used: ``out`` is written).
        inner_lr: The model's inner learning rate.
        eval_steps: Inner steps of its evaluation protocol (``full``).
        train_steps: Inner steps it was meta-trained with, if known.
        mode: ``train`` or ``eval``: the module mode to adapt in.
        strip_prefix: Prefix to remove from the keys (default: detected).
        check_tasks: Validation tasks of the check.

    Raises:
        CheckpointError: Unreadable source, or keys or shapes that do not fit
            the model (named).
    """
    bench = build_benchmark(spec)
    model = spec.model or bench.default_model
    net = create_model(model, num_classes=bench.num_outputs, input_shape=bench.input_shape)
    weights = match_keys(read_state_dict(source), set(net.state_dict()), strip_prefix)
    load_weights(net, weights, model)
    checkpoint = Checkpoint.from_model(
        net, benchmark=bench, model_name=model, ways=spec.ways, shots=spec.shots, inner_lr=inner_lr,
        eval_steps=eval_steps, train_steps=train_steps, mode=mode,
        source={"path": str(Path(source).resolve()), "sha256": file_checksum(source)},
    )
    out = Path(out)
    save_checkpoint(checkpoint, out)
    experiment = open_experiment(spec.but(checkpoint=str(out)), benchmark=bench)
    tasks = experiment.tasks("val", check_tasks, 0)
    full = estimate(score_pattern(experiment.model, experiment.benchmark, tasks, experiment.full,
                                  experiment.inner_lr), TaskDesign.of(tasks))
    chance = 1.0 / spec.ways if bench.metric == "accuracy" else None
    warning = None
    if chance is not None and full.mean <= 1.5 * chance:
        warning = (f"full MAML scores {full.mean:.3f}, near chance ({chance:.3f}): check --inner-lr, --model, "
                   "--mode and that the model was meta-trained for this benchmark")
    return ImportResult(checkpoint, out, full, chance, warning)

