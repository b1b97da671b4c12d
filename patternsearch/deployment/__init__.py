"""Deployment: an adaptation as one file that runs with torch alone (``patternsearch export``)."""

from ._export import (
    KINDS,
    TOLERANCE,
    ExportedAdaptation,
    ExportError,
    check_destination,
    compiler_available,
    export_adaptation,
    export_kind,
    exported_pattern,
    load_export,
)
from ._program import INPUT_NAMES, adapt_predict, trace_adapt_predict

__all__ = [
    "INPUT_NAMES",
    "KINDS",
    "TOLERANCE",
    "ExportError",
    "ExportedAdaptation",
    "adapt_predict",
    "check_destination",
    "compiler_available",
    "export_adaptation",
    "export_kind",
    "exported_pattern",
    "load_export",
    "trace_adapt_predict",
]
