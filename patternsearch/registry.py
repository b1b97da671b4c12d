"""Name → factory registries with plug-in lookup (models and benchmarks).

A factory is found, in this order, by

* a name registered with :meth:`Registry.register` (the built-ins and any
  module imported before use),
* a name published by an installed package under the registry's entry-point
  group (loaded lazily, only when the name is asked for or listed; set
  ``PATTERNSEARCH_NO_PLUGINS=1`` to turn auto-loading off),
* ``package.module:function`` (imported), or ``path/to/file.py:function``
  (executed).

Loading a plug-in runs its code: only use plug-ins you trust.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .errors import PluginError

F = TypeVar("F", bound=Callable[..., object])

NO_PLUGINS_ENV = "PATTERNSEARCH_NO_PLUGINS"


def _plugins_enabled() -> bool:
    return os.environ.get(NO_PLUGINS_ENV, "").strip().lower() in ("", "0", "false", "no")


def _load_file_attr(path: str, attr: str) -> object:
    file = Path(path)
    if not file.is_file():
        raise PluginError(f"plug-in file not found: {path}")
    module_name = f"patternsearch_plugin_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plug-in file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise PluginError(f"plug-in file {path} failed to import: {type(error).__name__}: {error}") from error
    return _attr(module, attr, path)


def _attr(module: object, attr: str, where: str) -> object:
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PluginError(f"plug-in {where} has no attribute {attr!r}") from None


def _load_reference(reference: str) -> object:
    """Loads ``module:attr`` or ``file.py:attr``."""
    location, _, attr = reference.rpartition(":")
    if not location or not attr:
        raise PluginError(f"malformed plug-in reference {reference!r}: expected module:function or file.py:function")
    if location.endswith(".py") or os.sep in location or "/" in location:
        return _load_file_attr(location, attr)
    try:
        module = importlib.import_module(location)
    except Exception as error:
        raise PluginError(f"plug-in module {location!r} failed to import: {type(error).__name__}: {error}") from error
    return _attr(module, attr, location)


class Registry(Generic[F]):
    """A table of named factories with plug-in lookup.

    Args:
        kind: What the factories make ("model", "benchmark"), for messages.
        entry_point_group: Entry-point group other packages publish under.
    """

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers a factory under ``name``."""

        def decorator(factory: F) -> F:
            self._factories[name] = factory
            return factory

        return decorator

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if not _plugins_enabled():
            return {}
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.entry_point_group)}

    def _load_entry_point(self, entry_point: importlib.metadata.EntryPoint) -> F:
        try:
            factory = entry_point.load()
        except Exception as error:
            raise PluginError(
                f"{self.kind} plug-in {entry_point.name!r} ({entry_point.value}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from error
        self._factories.setdefault(entry_point.name, factory)
        return self._factories[entry_point.name]

    def get(self, name: str) -> F:
        """Returns the factory for a name, entry point or ``module:function``.

        Raises:
            PluginError: If nothing matches (the message lists the known
                names) or the plug-in fails to import.
        """
        if name in self._factories:
            return self._factories[name]
        entry_points = self._entry_points()
        if name in entry_points:
            return self._load_entry_point(entry_points[name])
        if ":" in name:
            factory = _load_reference(name)
            if not callable(factory):
                raise PluginError(f"{self.kind} plug-in {name!r} is not callable")
            return factory  # type: ignore[return-value]
        raise PluginError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}")

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered and entry-point names matching a shell-style pattern."""
        names = set(self._factories) | set(self._entry_points())
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
