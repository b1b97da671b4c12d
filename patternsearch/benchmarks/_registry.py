"""The benchmark registry: ``register_benchmark``, ``create_benchmark``, ``list_benchmarks``."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..registry import PluginError, Registry
from ._tasks import Benchmark

BenchmarkFactory = Callable[..., Benchmark]

BENCHMARKS: Registry[BenchmarkFactory] = Registry("benchmark", "patternsearch.benchmarks")


def register_benchmark(name: str) -> Callable[[BenchmarkFactory], BenchmarkFactory]:
    """Registers ``factory(ways, shots, queries, data_root) -> Benchmark`` under ``name``."""
    return BENCHMARKS.register(name)


def list_benchmarks(pattern: str = "*") -> list[str]:
    """Names of the registered (and plug-in) benchmarks matching ``pattern``."""
    return BENCHMARKS.names(pattern)


def create_benchmark(
    name: str,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    data_root: str | os.PathLike[str] | None = None,
    **options: object,
) -> Benchmark:
    """Builds a benchmark by registered name, entry point or ``module:function``.

    Args:
        name: Benchmark name or plug-in reference.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class.
        data_root: Data folder.
        **options: Benchmark-specific options (e.g. ``image_size`` of ``image-folder``).

    Raises:
        PluginError: Unknown name, unknown option or failing plug-in.
        DataError: Missing or corrupted data.
    """
    factory = BENCHMARKS.get(name)
    try:
        benchmark = factory(ways=ways, shots=shots, queries=queries, data_root=data_root, **options)
    except TypeError as error:
        raise PluginError(f"benchmark {name!r} cannot be built with these options: {error}") from None
    if not isinstance(benchmark, Benchmark):
        raise PluginError(f"benchmark factory {name!r} returned {type(benchmark).__name__}, not a Benchmark")
    return benchmark
