"""``specialize``: an existing checkpoint meta-trained further with a pattern as its inner loop."""

from __future__ import annotations

import os
from pathlib import Path

from ..benchmarks import Benchmark
from ..checkpoint import (
    Checkpoint,
    CheckpointError,
    file_checksum,
    load_checkpoint,
)
from ._config import TrainConfig
from ._loop import train


def specialize(
    source: str | Path,
    pattern: str,
    iterations: int,
    out: str | Path,
    *,
    meta_batch: int | None = None,
    meta_lr: float | None = None,
    first_order: bool | None = None,
    seed: int = 1,
    val_every: int = 100,
    val_tasks: int = 100,
    checkpoint_every: int = 25,
    data_root: str | os.PathLike[str] | None = None,
    device: str = "auto",
    benchmark: Benchmark | None = None,
    progress: bool = True,
) -> Checkpoint:
    """Continues meta-training of a checkpoint with ``pattern`` as the inner loop.

    The new checkpoint at ``out`` starts from the source's weights (with a
    fresh Adam state), keeps its inner learning rate, evaluation step count
    and therefore its ``full`` baseline, records the pattern and its parent
    (checksum, path, and the parent's own pattern), and resumes like
    :func:`train` (resuming from another parent or with another pattern is
    refused).

    Args:
        source: The checkpoint to specialize.
        pattern: Inner-loop pattern text (e.g. the one ``select`` chose).
        iterations: Meta-updates of the specialization in total.
        out: Where the specialized checkpoint is written.
        meta_batch: Tasks per meta-update (default: the source's).
        meta_lr: Adam learning rate (default: the source's).
        first_order: First-order MAML (default: as the source was trained).
        seed: Seeds the training episodes (1: other episodes than a source
            trained with the default seed 0 saw first).
        val_every: Validate (with ``pattern``) every this many iterations and at the end (0: never).
        val_tasks: Validation episodes.
        checkpoint_every: Write the checkpoint every this many iterations.
        data_root: Data folder.
        device: ``cpu``, ``cuda`` or ``auto``.
        benchmark: A ready benchmark (default: the source's).
        progress: Show a progress bar.

    Returns:
        The specialized checkpoint.

    Raises:
        CheckpointError: Unreadable source, or ``out`` is the source itself.
    """
    source, out = Path(source), Path(out)
    if out.exists() and out.resolve() == source.resolve():
        raise CheckpointError(f"--out {out} is the source checkpoint; write the specialization to another file")
    parent = load_checkpoint(source)
    stored = parent.config
    checksum = file_checksum(source)
    config = TrainConfig(
        benchmark=parent.benchmark, model=parent.model, ways=parent.ways, shots=parent.shots,
        queries=int(stored.get("queries", 15)), inner_lr=parent.inner_lr, train_steps=parent.train_steps or None,
        eval_steps=parent.eval_steps, meta_batch=meta_batch or stored.get("meta_batch"),
        meta_lr=meta_lr or stored.get("meta_lr"), iterations=iterations,
        first_order=bool(stored.get("first_order", False)) if first_order is None else first_order, seed=seed,
        val_every=val_every, val_tasks=val_tasks, checkpoint_every=checkpoint_every,
        model_kwargs=dict(stored.get("model_kwargs", {})), benchmark_options=dict(stored.get("benchmark_options", {})),
        data_root=None if data_root is None else os.fspath(data_root), device=device, pattern=pattern,
        parent_sha256=checksum,
    )
    return train(config, out, benchmark=benchmark, progress=progress, initial_state=parent.state_dict,
                 parent={"sha256": checksum, "path": str(source), "pattern": parent.pattern}, mode=parent.mode)
