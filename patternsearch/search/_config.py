"""A study's configuration: what its trials were measured against."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import optuna

from ._space import SearchSpace

CONFIG_ATTR = "patternsearch_config"
TARGET_ATTR = "patternsearch_target_trials"
SELECTION_ATTR = "patternsearch_selection"
ENVIRONMENT_ATTR = "patternsearch_environment"

TIME_METRICS = ("ratio", "latency", "flops")


def pattern_study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The storage's pattern studies (those with a configuration; ``tune``'s own studies are not), by name."""
    return sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                  if CONFIG_ATTR in s.user_attrs)


@dataclass(frozen=True)
class StudyConfig:
    """Everything that makes two trials of a study comparable.

    A study refuses to resume with a configuration that differs in any field.

    Attributes:
        benchmark: Benchmark name.
        model: Model name.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class.
        checkpoint_sha256: Checksum of the meta-trained checkpoint.
        inner_lr: Inner learning rate (from the checkpoint).
        groups: Layer-group names, in order.
        baseline: The baseline pattern, ``FLAGS:STEPS``.
        task_seed: Seed of the fixed validation tasks.
        tasks: Number of validation tasks.
        max_steps: Largest inner-step count searched.
        sampler: Sampler name.
        sampler_seed: Sampler seed.
        time_metric: ``ratio`` (latency relative to the baseline, measured
            together on the same worker), ``latency`` (ms) or ``flops``.
        latency_tasks: Tasks timed per trial.
        repeats: Timed rounds per task.
        device: Device type (``cpu`` or ``cuda``).
        benchmark_options: Benchmark-specific options.
        mode: Module mode adaptation runs in (``train`` or ``eval``, from the
            checkpoint).
        space: Search space kind, ``flags`` or ``phases`` (see
            :class:`~patternsearch.search.SearchSpace`).
        max_phases: Largest number of phases (1 for ``flags``).
        search_lr: Whether each phase draws an inner learning-rate scale.
    """

    benchmark: str
    model: str
    ways: int
    shots: int
    queries: int
    checkpoint_sha256: str
    inner_lr: float
    groups: tuple[str, ...]
    baseline: str
    task_seed: int
    tasks: int
    max_steps: int
    sampler: str
    sampler_seed: int
    time_metric: str
    latency_tasks: int
    repeats: int
    device: str
    benchmark_options: dict[str, Any]
    mode: str = "train"
    space: str = "flags"
    max_phases: int = 1
    search_lr: bool = False

    def search_space(self) -> SearchSpace:
        """The space the study's trials are drawn from."""
        return SearchSpace(len(self.groups), self.max_steps, self.space, self.max_phases, self.search_lr)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        values = asdict(self)
        values["groups"] = list(self.groups)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyConfig:
        """Inverse of :meth:`as_dict`."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in values.items() if k in known}
        data["groups"] = tuple(data.get("groups", ()))
        data.setdefault("benchmark_options", {})
        return cls(**data)

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """``field: stored -> new`` for every field that differs from ``stored``.

        A field that ``stored`` lacks (a study made before the field existed)
        counts as its default.
        """
        return differences(stored, self.as_dict())


def differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``field: stored -> requested`` for every requested field that differs from a stored configuration.

    ``requested`` may hold only some fields: what is known before the data
    and the checkpoint are loaded, so that a request the study would refuse
    is refused before any heavy work. A field that ``stored`` lacks counts as
    its default.
    """
    defaults = {f.name: f.default for f in fields(StudyConfig) if f.default is not MISSING}
    return [
        f"{key}: {stored.get(key, defaults.get(key))!r} -> {value!r}"
        for key, value in requested.items()
        if stored.get(key, defaults.get(key)) != value
    ]
