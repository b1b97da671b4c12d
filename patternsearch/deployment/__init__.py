"""Deployment: a pattern's adaptation and prediction prepared once for a device.

* :class:`DeployedAdapter`: layout, frozen-prefix plan and, where it pays,
  compiled adaptation and prediction (CUDA graphs on CUDA), warmed up; it
  adapts, predicts, or does both in one call. Every time ``select``,
  ``evaluate``, ``bench`` and ``tune`` report as deployed is measured on it.
"""

from ._adapter import WORTH_COMPILING_MS, DeployedAdapter, DeploymentPath, compile_options, compiler_present

__all__ = ["WORTH_COMPILING_MS", "DeployedAdapter", "DeploymentPath", "compile_options", "compiler_present"]
