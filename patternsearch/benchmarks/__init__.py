"""Few-shot benchmarks: episodes, the registry and the built-in data sets."""

from . import images, omniglot, sinusoid  # noqa: E402,F401  (registers the built-ins)
from ._archives import DataError, atomic_write_bytes, cache_home, resolve_data_root
from ._registry import BENCHMARKS, create_benchmark, list_benchmarks, register_benchmark
from ._tasks import (
    Benchmark,
    ClassEpisodes,
    Task,
    TaskSource,
    TrainingDefaults,
    accuracy,
    classification_benchmark,
    disjoint_task_sets,
    negative_mse,
    split_stream,
    task_rng,
)

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "ClassEpisodes",
    "DataError",
    "Task",
    "TaskSource",
    "TrainingDefaults",
    "accuracy",
    "atomic_write_bytes",
    "cache_home",
    "classification_benchmark",
    "create_benchmark",
    "disjoint_task_sets",
    "list_benchmarks",
    "negative_mse",
    "register_benchmark",
    "resolve_data_root",
    "split_stream",
    "task_rng",
]
