"""Writing an adaptation as one ``.pt2`` file that runs with torch alone, and loading it back.

Two kinds of file, both called ``adapter(x_support, y_support, x_query) ->
outputs`` for the shapes they were exported for:

* ``aoti``: an AOTInductor package (compiled C++; needs a C++ compiler to
  build, not to run), loaded with ``torch._inductor.aoti_load_package(path)``;
  its input checks (shapes, dtypes, devices) are compiled in and always on,
  where AOTInductor by default checks only when ``AOTI_RUNTIME_CHECK_INPUTS``
  is set and otherwise reads past a wrongly shaped input. The package holds
  the exported program too, so ``torch.export.load`` reads it as well;
* ``program``: a ``torch.export`` program, loaded with
  ``torch.export.load(path).module()``, whose guards refuse other shapes.

The file is written atomically (readers see no file or the whole file) and,
before it is kept, loaded back and compared with eager adaptation on the
sample task.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..adaptation import LossFn, draws_random
from ..benchmarks import atomic_write_bytes
from ..errors import PatternsearchError, one_line
from ..groups import layer_groups
from ..pattern import Pattern
from ._adapter import compiler_present
from ._program import INPUT_NAMES, adapt_predict, trace_adapt_predict

KINDS = ("auto", "aoti", "program")
TOLERANCE = 1e-4
_AOTI_MARK = "/data/aotinductor/"
_ABOUT = "patternsearch.json"  # an extra file in the archive: what the export holds
_CHECK_SWITCH = "const static bool result = env_var_value != nullptr && env_var_value[0] != '0';"


class ExportError(PatternsearchError, RuntimeError):
    """An adaptation that cannot be exported (a model that cannot be traced, an unwritable path), in one line."""


@dataclass(frozen=True)
class ExportedAdaptation:
    """A written export.

    Attributes:
        path: The file.
        kind: ``aoti`` (AOTInductor package) or ``program`` (``torch.export`` program).
        pattern: The adaptation, explicit ``FLAGS:STEPS`` phases.
        shapes: Shapes of ``x_support``, ``y_support`` and ``x_query`` it accepts.
        max_difference: Largest difference of its outputs from eager adaptation on the sample task
            (None when the model draws random numbers while adapting, e.g. active dropout).
        build_s: Seconds the trace, export and build took.
        note: Why the kind differs from the one asked for, or an empty string.
    """

    path: str
    kind: str
    pattern: str
    shapes: tuple[tuple[int, ...], ...]
    max_difference: float | None
    build_s: float
    note: str = ""

    @property
    def loader(self) -> str:
        """The Python that loads it (torch alone)."""
        program = f"torch.export.load({self.path!r}).module()"
        if self.kind == "aoti":
            return f"torch._inductor.aoti_load_package({self.path!r}) (compiled), or {program}"
        return program


def check_destination(path: str | os.PathLike[str]) -> Path:
    """Refuses, before any slow work, a path the export cannot be written to.

    Raises:
        ExportError: Not ending in ``.pt2``, a folder, or a folder that is
            missing or not writable.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ExportError(f"export path {path} must end in .pt2 (the archive torch loads)")
    if path.is_dir():
        raise ExportError(f"export path {path} is a folder; name the file, e.g. {path / 'adapter.pt2'}")
    folder = path.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"cannot write {path}: permission denied")
    return path


def export_adaptation(model: nn.Module, pattern: Pattern, inner_lr: float, loss_fn: LossFn,
                      sample: tuple[Tensor, Tensor, Tensor], path: str | os.PathLike[str], *,
                      kind: str = "auto") -> ExportedAdaptation:
    """Traces adapt + predict for the sample's shapes and writes it to ``path`` (atomically), verified.

    Args:
        model: The meta-trained network in the modes to adapt in; not modified.
        pattern: The adaptation.
        inner_lr: The checkpoint's inner learning rate.
        loss_fn: The benchmark's loss.
        sample: One task's support inputs, support targets and query inputs:
            the shapes, dtypes and device the export accepts.
        path: A ``.pt2`` file.
        kind: ``aoti``, ``program`` or ``auto`` (``aoti`` where a C++
            compiler is present and the build succeeds, else ``program``,
            saying why in the result's note).

    Raises:
        ExportError: A bad path or kind, a pattern for other layer groups, a model that cannot be traced, a
            failed build, or outputs that differ from eager adaptation by
            more than :data:`TOLERANCE` (relative to their size); nothing is
            written then.
    """
    if kind not in KINDS:
        raise ExportError(f"unknown export kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = check_destination(path)
    groups = len(layer_groups(model))
    if pattern.num_groups != groups:
        raise ExportError(f"pattern {pattern} has {pattern.num_groups} group flags but the model has {groups} "
                          "layer groups")
    start = time.perf_counter()
    program = _export_program(model, pattern, inner_lr, loss_fn, sample)
    about = json.dumps({"pattern": str(pattern), "shapes": [list(t.shape) for t in sample],
                        "inputs": list(INPUT_NAMES)})
    note = ""
    if kind == "auto" and not compiler_present(torch.device("cpu")):
        kind, note = "program", "no C++ compiler found: wrote an exported program instead of an AOTInductor package"
    try:
        data = _build(program, "aoti" if kind == "auto" else kind, about)
        kind = "aoti" if kind == "auto" else kind
    except ExportError as error:
        if kind != "auto":
            raise
        kind, note = "program", f"wrote an exported program instead: {error}"
        data = _build(program, kind, about)
    build_s = time.perf_counter() - start
    random = draws_random(model)
    difference = None if random else _verify(data, kind, adapt_predict(model, pattern, inner_lr, loss_fn), sample)
    atomic_write_bytes(path, data)
    shapes = tuple(tuple(t.shape) for t in sample)
    return ExportedAdaptation(str(path), kind, str(pattern), shapes, difference, build_s, note)


def _export_program(model: nn.Module, pattern: Pattern, inner_lr: float, loss_fn: LossFn,
                    sample: tuple[Tensor, Tensor, Tensor]) -> torch.export.ExportedProgram:
    try:
        graph = trace_adapt_predict(model, pattern, inner_lr, loss_fn, sample)
        return torch.export.export(graph, tuple(sample))
    except Exception as error:  # tracing raises many kinds: data-dependent reads, unsupported operations
        raise ExportError(f"cannot trace the adaptation of {type(model).__name__} for export ({_gist(error)}); "
                          "a model must not read tensor values on the host (.item(), if on a tensor, "
                          "data-dependent shapes)") from None


def _gist(error: BaseException, limit: int = 160) -> str:
    """The first sentence of a tracer's message (the rest advises on tracing calls the user never made)."""
    text = one_line(error)
    for end in ("! ", ". "):
        if end in text:
            text = text[: text.index(end) + 1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build(program: torch.export.ExportedProgram, kind: str, about: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "program":
        torch.export.save(program, buffer, extra_files={_ABOUT: about})
        return buffer.getvalue()
    from torch._inductor import aoti_compile_and_package  # only here: importing it takes a while

    with tempfile.TemporaryDirectory(prefix="patternsearch-export-") as folder:
        package = os.path.join(folder, "adapter.pt2")
        try:
            with _input_checks_always_on(), _holding_program(program, about), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, not the user's
                aoti_compile_and_package(program, package_path=package)
        except ExportError:
            raise
        except Exception as error:  # the C++ build can fail in many ways
            raise ExportError(f"the AOTInductor build failed ({one_line(error)}); export --kind program writes "
                              "an exported program, which needs no compiler") from None
        return Path(package).read_bytes()


@contextlib.contextmanager
def _holding_program(program: torch.export.ExportedProgram, about: str) -> Iterator[None]:
    """Packages the exported program beside the compiled model, so that ``torch.export.load`` reads the file too.

    It also holds ``about`` (what the export holds, as JSON). One file then
    serves both loaders: ``aoti_load_package`` runs the
    compiled model, ``torch.export.load(path).module()`` the program (on a
    machine where the compiled library cannot run).
    """
    from torch._inductor import package
    from torch.export.pt2_archive._package import package_pt2

    original = package.package_aoti

    def package_both(archive_file: Any, aoti_files: Any) -> Any:
        return package_pt2(archive_file, exported_programs={"model": program}, aoti_files=aoti_files,
                           extra_files={_ABOUT: about})

    package.package_aoti = package_both
    try:
        yield
    finally:
        package.package_aoti = original


@contextlib.contextmanager
def _input_checks_always_on() -> Iterator[None]:
    """Compiles AOTInductor's input checks so that they always run, not only under ``AOTI_RUNTIME_CHECK_INPUTS``.

    Without them a wrongly shaped input is read out of bounds (a crash or
    wrong numbers) instead of refused with one line.

    Raises:
        ExportError: If this torch writes the checks differently (checked at build).
    """
    from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu

    original = CppWrapperCpu.generate_input_output_runtime_checks
    switched: list[bool] = []

    def generate(self: Any) -> None:
        original(self)
        lines = self.prefix._lines
        for index, line in enumerate(lines):
            if isinstance(line, str) and _CHECK_SWITCH in line:
                lines[index] = line.replace(_CHECK_SWITCH, "const static bool result = true;")
                switched.append(True)

    CppWrapperCpu.generate_input_output_runtime_checks = generate  # type: ignore[method-assign]
    try:
        yield
    finally:
        CppWrapperCpu.generate_input_output_runtime_checks = original  # type: ignore[method-assign]
    if not switched:
        raise ExportError(f"torch {torch.__version__}'s AOTInductor cannot be made to check input shapes; "
                          "export --kind program writes an exported program, whose guards check them")


def _verify(data: bytes, kind: str, eager: Callable[[Tensor, Tensor, Tensor], Tensor],
            sample: tuple[Tensor, Tensor, Tensor]) -> float:
    """Largest difference between the built file's outputs and eager adaptation on the sample task."""
    with tempfile.TemporaryDirectory(prefix="patternsearch-export-") as folder:
        copy = Path(folder) / "adapter.pt2"
        copy.write_bytes(data)
        adapter = load_export(copy)
        with torch.no_grad():
            got = adapter(*sample)
            expected = eager(*sample)
    difference = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if not difference <= TOLERANCE * scale:
        raise ExportError(f"the {kind} export's outputs differ from eager adaptation by {difference:.3g} on the "
                          f"sample task (more than {TOLERANCE:g} x {scale:.3g}); nothing was written")
    return difference



def export_kind(path: str | os.PathLike[str]) -> str:
    """``aoti`` or ``program``: which kind of export ``path`` holds.

    Raises:
        ExportError: A missing file or one that is not a ``.pt2`` archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise ExportError(f"cannot read export {path}: {one_line(error)}") from None
    return "aoti" if any(_AOTI_MARK in name for name in names) else "program"


def load_export(path: str | os.PathLike[str]) -> Callable[..., Tensor]:
    """The adapter in ``path``: ``adapter(x_support, y_support, x_query) -> outputs`` (what torch alone loads).

    Raises:
        ExportError: A missing or unreadable file.
    """
    if export_kind(path) == "aoti":
        from torch._inductor import aoti_load_package  # only here: importing it takes a while

        return aoti_load_package(os.fspath(path))
    return torch.export.load(os.fspath(path)).module()



def exported_pattern(path: str | os.PathLike[str]) -> str | None:
    """The pattern an export of this version holds (None for a ``.pt2`` file written otherwise).

    Raises:
        ExportError: A missing file or one that is not a ``.pt2`` archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("/extra/" + _ABOUT)]
            about = json.loads(archive.read(names[0])) if names else {}
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise ExportError(f"cannot read export {path}: {one_line(error)}") from None
    return about.get("pattern")
