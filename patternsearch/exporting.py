"""``patternsearch export``: the chosen adaptation as one file that runs with torch alone.

The adaptation is a pattern and its checkpoint: by default the answer
``tune`` stored for the study (its checkpoint may be a specialized one),
else the one ``select`` stored, else the pattern and checkpoint given. The
file is built for one task shape: the checkpoint's ways and shots and
``queries`` per class; the sample task that fixes the shapes (and checks the
export's outputs against eager adaptation) is the first validation task.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from .deployment import ExportedAdaptation, check_destination, export_adaptation
from .errors import UsageError
from .experiment import Experiment, open_checkpoint
from .search import (
    CONFIG_ATTR,
    DEFAULT_STORAGE,
    SELECTION_ATTR,
    Selection,
    StudyConfig,
    resolve_study,
    study_experiment,
)
from .tuning import load_result


@dataclass(frozen=True)
class Export:
    """What ``export`` wrote.

    Attributes:
        adapter: The file, its kind, shapes and check against eager adaptation.
        checkpoint: The checkpoint the pattern adapts.
        source: Where the adaptation came from, in words.
    """

    adapter: ExportedAdaptation
    checkpoint: str
    source: str

    def describe(self) -> str:
        """The lines ``export`` prints."""
        a = self.adapter
        kind = "an AOTInductor package" if a.kind == "aoti" else "an exported program"
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in
                           zip(("x_support", "y_support", "x_query"), a.shapes, strict=True))
        check = ("outputs random (the model draws random numbers while adapting): not compared"
                 if a.max_difference is None else
                 f"outputs within {a.max_difference:.2g} of ps.adapt + functional_forward on a validation task")
        lines = [f"wrote {a.path}: {kind} of {a.pattern} on {self.checkpoint} ({self.source})",
                 f"  call: adapter({shapes}) -> outputs; other shapes are refused",
                 f"  load (torch alone, no patternsearch): {a.loader}",
                 f"  {check}; built in {a.build_s:.0f} s",
                 "  a diverged adaptation gives non-finite outputs: check torch.isfinite(outputs)"]
        if a.note:
            lines.append(f"  note: {a.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def export(
    path: str | os.PathLike[str],
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    pattern: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    queries: int | None = None,
    kind: str = "auto",
    data_root: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> Export:
    """Writes an adaptation as one ``.pt2`` file that runs with torch alone (see the module doc).

    Args:
        path: The ``.pt2`` file to write (checked before any slow work).
        storage: Optuna storage holding the study's answer.
        study_name: The pattern study (default: the only one in the storage).
        pattern: Export this pattern instead of a stored answer.
        checkpoint: With ``pattern``: its checkpoint (default: the shipped
            one); without: the stored answer's checkpoint at another path.
        queries: Query examples per class it accepts (default: the checkpoint's, else 15).
        kind: ``aoti``, ``program`` or ``auto`` (see :func:`~patternsearch.deployment.export_adaptation`).
        data_root: Data folder (the sample task is read from it).
        device: Where the export runs (``cpu`` or ``cuda``).

    Raises:
        UsageError: No stored answer (and no ``pattern``), a bad ``queries``.
        ExportError: A bad path, a model that cannot be traced, a failed build.
    """
    check_destination(path)
    if queries is not None and queries < 1:
        raise UsageError(f"queries must be a positive integer, got {queries}")
    experiment, text, source = _adaptation(storage, study_name, pattern, checkpoint, data_root, device, queries)
    task = experiment.tasks("val", 1, 0)[0]
    adapter = export_adaptation(experiment.model, experiment.pattern(text), experiment.inner_lr,
                                experiment.benchmark.loss_fn, (task.x_support, task.y_support, task.x_query), path,
                                kind=kind)
    return Export(adapter, str(experiment.checkpoint_path), source)


def _adaptation(storage: str, study_name: str | None, pattern: str | None,
                checkpoint: str | os.PathLike[str] | None, data_root: str | os.PathLike[str] | None,
                device: str, queries: int | None) -> tuple[Experiment, str, str]:
    """The experiment to adapt, the pattern's text and where they came from."""
    if pattern is not None:
        return open_checkpoint(checkpoint, data_root=data_root, device=device, queries=queries), pattern, "as given"
    study = resolve_study(storage, study_name)
    tuned = load_result(storage, study.study_name)
    if tuned is not None:
        selection, source = tuned.selection, f"the answer of 'patternsearch tune' on study {study.study_name!r}"
    elif SELECTION_ATTR in study.user_attrs:
        selection = Selection.from_dict(study.user_attrs[SELECTION_ATTR],
                                        what=f"the selection stored in study {study.study_name!r}",
                                        remedy="run 'patternsearch select' again to store a new one")
        source = f"the answer of 'patternsearch select' on study {study.study_name!r}"
    else:
        raise UsageError(f"study {study.study_name!r} holds no answer of 'patternsearch select' or 'patternsearch "
                         "tune'; run one of them first, or export a pattern with --pattern and --checkpoint")
    path = checkpoint or selection.checkpoint
    if path is None:  # validation only: the study's own checkpoint, checked against the study's checksum
        config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
        path = study_experiment(config, data_root=data_root, checkpoint=None, device=device).checkpoint_path
    return open_checkpoint(path, data_root=data_root, device=device, queries=queries), selection.pattern, source
