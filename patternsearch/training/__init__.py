"""MAML meta-training (second order by default), resumable from its checkpoint.

The inner loop is full MAML, or any pattern (``train --pattern``): then it
runs :func:`~patternsearch.adapt`'s fast path (backward stops at the first
flagged group, the frozen prefix runs once per task) while the outer loop
still updates every parameter. :func:`specialize` continues an existing
checkpoint's meta-training with a pattern as its inner loop.
"""

from ._config import TrainConfig
from ._loop import ensure_checkpoint, train
from ._specialize import specialize
from ._steps import accumulate_meta_gradient, inner_pattern, meta_update_times

__all__ = [
    "TrainConfig",
    "accumulate_meta_gradient",
    "ensure_checkpoint",
    "inner_pattern",
    "meta_update_times",
    "specialize",
    "train",
]
