"""patternsearch: find fast Lambda patterns for MAML few-shot adaptation."""

from ._version import __version__
from .adaptation import adapt, adaptation_plan, functional_forward
from .benchmarks import Benchmark, Task, create_benchmark, list_benchmarks, register_benchmark
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .deployment import DeployedAdapter
from .errors import PatternsearchError
from .experiment import Experiment, ModelGroups, model_groups, open_checkpoint, open_experiment
from .exporting import Export, export
from .groups import LayerGroup, layer_groups
from .importing import import_checkpoint
from .models import create_model, list_models, register_model
from .pattern import Pattern, Phase
from .reference import reference_adapt
from .report import Report, write_report
from .search import (
    BenchReport,
    Evaluation,
    Selection,
    bench_patterns,
    confirm_pattern,
    evaluate,
    list_studies,
    optimize,
    select,
)
from .spec import ExperimentSpec
from .training import TrainConfig, ensure_checkpoint, specialize, train
from .tuning import TuneResult, tune

__all__ = [
    "BenchReport",
    "Benchmark",
    "ModelGroups",
    "Report",
    "Selection",
    "bench_patterns",
    "list_studies",
    "model_groups",
    "open_checkpoint",
    "write_report",
    "Checkpoint",
    "DeployedAdapter",
    "Experiment",
    "ExperimentSpec",
    "LayerGroup",
    "Pattern",
    "PatternsearchError",
    "Phase",
    "Task",
    "TrainConfig",
    "TuneResult",
    "__version__",
    "adapt",
    "adaptation_plan",
    "confirm_pattern",
    "evaluate",
    "Export",
    "export",
    "Evaluation",
    "create_benchmark",
    "create_model",
    "ensure_checkpoint",
    "functional_forward",
    "import_checkpoint",
    "layer_groups",
    "list_benchmarks",
    "list_models",
    "load_checkpoint",
    "open_experiment",
    "optimize",
    "reference_adapt",
    "register_benchmark",
    "register_model",
    "save_checkpoint",
    "select",
    "specialize",
    "train",
    "tune",
]
