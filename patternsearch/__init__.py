"""patternsearch: find fast Lambda patterns for MAML few-shot adaptation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("patternsearch")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

from .adaptation import adapt, adaptation_plan, functional_forward
from .benchmarks import Benchmark, Task, create_benchmark, list_benchmarks, register_benchmark
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .groups import LayerGroup, layer_groups
from .models import create_model, list_models, register_model
from .pattern import Pattern, Phase
from .reference import reference_adapt
from .search import optimize, select
from .training import TrainConfig, specialize, train

__all__ = [
    "Benchmark",
    "Checkpoint",
    "LayerGroup",
    "Pattern",
    "Phase",
    "Task",
    "TrainConfig",
    "__version__",
    "adapt",
    "adaptation_plan",
    "create_benchmark",
    "create_model",
    "functional_forward",
    "layer_groups",
    "list_benchmarks",
    "list_models",
    "load_checkpoint",
    "optimize",
    "reference_adapt",
    "register_benchmark",
    "register_model",
    "save_checkpoint",
    "select",
    "specialize",
    "train",
]
