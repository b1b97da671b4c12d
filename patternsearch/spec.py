"""What an experiment adapts: benchmark, model, episode shape, data, checkpoint and device, validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class ExperimentSpec:
    """The settings every command shares, checked when the spec is made.

    ``None`` means the default that only the benchmark or the checkpoint
    knows (a model left out is the checkpoint's, else the benchmark's).

    Attributes:
        benchmark: Benchmark name or plug-in reference.
        model: Model name or plug-in reference (None: the checkpoint's, else
            the benchmark's default).
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class.
        data_root: Folder holding the benchmark's data (None: the cache).
        benchmark_options: Benchmark-specific options.
        checkpoint: Checkpoint path (None: the shipped or cached one of this
            benchmark, model, ways and shots).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        UsageError: A count below 1 or an empty name.
    """

    benchmark: str = "omniglot-small"
    model: str | None = None
    ways: int = 5
    shots: int = 1
    queries: int = 15
    data_root: str | None = None
    benchmark_options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("ways", "shots", "queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name} must be a positive integer, got {value!r}")
        if not self.benchmark:
            raise UsageError("--benchmark must name a benchmark")
        for name in ("data_root", "checkpoint"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        object.__setattr__(self, "benchmark_options", dict(self.benchmark_options))
        object.__setattr__(self, "device", str(self.device))

    def but(self, **changes: Any) -> ExperimentSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
