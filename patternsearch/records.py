"""Versioned records: what a command stores in a study is read back as a typed object, or refused in one line.

A record is a dataclass's fields plus ``record_version``. Reading a record
of another version (a field renamed, added or removed since) raises
:class:`~patternsearch.errors.RecordError` naming what to rerun, never a
``TypeError`` from the constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, fields
from typing import Any, ClassVar, TypeVar

from .errors import RecordError

VERSION_KEY = "record_version"

Record = TypeVar("Record")
Stored = TypeVar("Stored", bound="VersionedRecord")


def to_record(value: Any, version: int) -> dict[str, Any]:
    """``value``'s fields (nested dataclasses as dicts) with ``record_version``: JSON-ready."""
    return {**asdict(value), VERSION_KEY: version}


def from_record(cls: type[Record], data: Mapping[str, Any], version: int, *, what: str, remedy: str) -> Record:
    """The record ``data`` read back as ``cls``.

    Args:
        cls: A dataclass.
        data: The stored form (see :func:`to_record`).
        version: The version this code reads.
        what: The record, for the message (e.g. ``the selection stored in study 'flags'``).
        remedy: What makes a new one (e.g. ``run 'patternsearch select' again``).

    Raises:
        RecordError: The record is of another version, or does not fit ``cls``.
    """
    found = data.get(VERSION_KEY) if isinstance(data, Mapping) else None
    if found != version:
        raise RecordError(f"{what} was written by another version of patternsearch (record version "
                          f"{found if found is not None else 'none'}, this one reads {version}); {remedy}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {key: value for key, value in data.items() if key != VERSION_KEY}
    required = {f.name for f in fields(cls)  # type: ignore[arg-type]
                if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(values) - names), sorted(required - set(values))
    if unknown or missing:
        raise RecordError(f"{what} does not fit record version {version} (unknown fields {unknown}, missing "
                          f"{missing}); {remedy}")
    return cls(**values)


class VersionedRecord:
    """Base of a dataclass a command stores: :meth:`to_dict` writes its version, :meth:`from_dict` checks it.

    A subclass sets ``RECORD_VERSION`` (raised whenever a field is renamed,
    added or removed) and overrides :meth:`rebuilt` when fields of its own
    type come back from JSON as lists or dicts.
    """

    RECORD_VERSION: ClassVar[int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, versioned (nested dataclasses as dicts)."""
        return to_record(self, self.RECORD_VERSION)

    @classmethod
    def from_dict(cls: type[Stored], data: Mapping[str, Any], *, what: str, remedy: str) -> Stored:
        """The stored form read back.

        Args:
            data: What :meth:`to_dict` wrote.
            what: The record, for the message (e.g. ``the selection stored in study 'flags'``).
            remedy: What makes a new one.

        Raises:
            RecordError: It was written by another version of patternsearch.
        """
        return from_record(cls, data, cls.RECORD_VERSION, what=what, remedy=remedy).rebuilt()

    def rebuilt(self: Stored) -> Stored:
        """The record with the types JSON lost restored (tuples, nested records); itself by default."""
        return self
