"""Deployment: a pattern's adaptation and prediction prepared once for a device, or exported as one file.

* :class:`DeployedAdapter`: layout, frozen-prefix plan and, where it pays,
  compiled adaptation and prediction (CUDA graphs on CUDA), warmed up; it
  adapts, predicts, or does both in one call. Every time ``select``,
  ``evaluate``, ``bench`` and ``tune`` report as deployed is measured on it.
* :func:`export_adaptation`: adapt + predict traced into one file that runs
  with torch alone (``patternsearch export``; :func:`load_export` reads it).
"""

from ._adapter import WORTH_COMPILING_MS, DeployedAdapter, DeploymentPath, compile_options, compiler_present
from ._export import (
    KINDS,
    TOLERANCE,
    ExportedAdaptation,
    ExportError,
    check_destination,
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
    "WORTH_COMPILING_MS",
    "DeployedAdapter",
    "DeploymentPath",
    "ExportError",
    "ExportedAdaptation",
    "adapt_predict",
    "check_destination",
    "compile_options",
    "compiler_present",
    "export_adaptation",
    "export_kind",
    "exported_pattern",
    "load_export",
    "trace_adapt_predict",
]
