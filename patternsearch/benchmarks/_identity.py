"""The identity of a split: checksums of the data it reads and of its definition (the key of looks at it).

Looks at a test split (:mod:`patternsearch.looks`) are kept by this identity,
so that two data sets read through one benchmark are two splits and a copy
of a data set is the same split. Built-in benchmarks state it:

* generated data (``sinusoid``): a checksum of the generating definition;
* published archives (Omniglot): the archives' md5 (verified against the
  published sums whenever they are read) and the split's alphabets;
* image files (``image-folder``, ``mini-imagenet``): the sha256 of every file
  the split reads, grouped by class, without names (a copied or renamed data
  set is the same split). Hashing every file costs one read of the split, so
  the result is cached in ``<cache>/split-identities.json`` under a checksum
  of the files' paths, sizes and modification times: a folder left as it was
  is hashed once. Keying the identity itself by those would be cheaper, but
  a copy of the data (new times, new paths) would then count as a new split
  and forget every look at it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._archives import DataError, atomic_write_bytes, cache_home

_CACHE = "split-identities.json"


def definition_identity(definition: Mapping[str, object]) -> str:
    """A checksum of a split's definition (JSON-able values): the identity of generated or published data."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_identity(classes: Sequence[Sequence[Path]], definition: Mapping[str, object]) -> str:
    """The identity of a split of image files: its definition and every class's file contents (see the module doc).

    Args:
        classes: Each class's files.
        definition: What else defines the split (e.g. the benchmark's kind).
    """
    try:
        stats = [[str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] for files in classes
                 for path in files]
    except OSError as error:
        raise DataError(f"cannot read {error.filename} ({error.strerror})") from None
    key = definition_identity({"definition": definition, "files": stats})
    cache_path = cache_home() / _CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    try:
        per_class = sorted(hashlib.sha256("".join(sorted(_file_sha256(p) for p in files)).encode()).hexdigest()
                           for files in classes)
    except OSError as error:
        raise DataError(f"cannot read {error.filename} ({error.strerror})") from None
    identity = definition_identity({"definition": definition, "classes": per_class})
    try:
        atomic_write_bytes(cache_path, json.dumps({**cache, key: identity}).encode())
    except OSError:
        pass  # an unwritable cache only costs time
    return identity
