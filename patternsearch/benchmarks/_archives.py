"""Finding, downloading and verifying data archives; the user cache folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

DATA_ENV = "PATTERNSEARCH_DATA"
HOME_ENV = "PATTERNSEARCH_HOME"


@dataclass(frozen=True)
class Archive:
    """A published archive and its checksum."""

    filename: str
    md5: str
    url: str


def cache_home() -> Path:
    """The user cache folder: ``$PATTERNSEARCH_HOME``, else ``$XDG_CACHE_HOME/patternsearch``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "patternsearch"


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """``data_root`` if given, else ``$PATTERNSEARCH_DATA``, else ``<cache>/data``.

    Raises:
        DataError: If a folder named by the argument or the variable does not exist.
    """
    explicit = data_root or os.environ.get(DATA_ENV)
    if not explicit:
        return cache_home() / "data"
    root = Path(explicit).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return root


def md5sum(path: Path) -> str:
    """Hex md5 of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes a file so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _describe(archives: Sequence[Archive]) -> str:
    return ", ".join(f"{a.filename} (md5 {a.md5})" for a in archives)


def _download(archive: Archive, root: Path) -> None:
    try:
        with urllib.request.urlopen(archive.url, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"download of {archive.url} failed ({reason})") from error
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if actual != archive.md5:
        raise DataError(f"downloaded {archive.filename} has md5 {actual}, expected {archive.md5}")
    try:
        atomic_write_bytes(root / archive.filename, data)
    except OSError as error:
        raise DataError(f"cannot write {archive.filename} into {root} ({error.strerror or error})") from error


def ensure_archives(archives: Sequence[Archive], root: Path) -> list[Path]:
    """Returns the archives' paths in ``root``, downloading missing ones.

    Every archive is verified by md5. Downloads are written atomically, so a
    failure leaves nothing half-written.

    Raises:
        DataError: One line naming the files, their sums and the folder, when
            an archive is corrupted or cannot be downloaded.
    """
    paths = []
    for archive in archives:
        path = root / archive.filename
        if path.is_file():
            actual = md5sum(path)
            if actual != archive.md5:
                raise DataError(
                    f"{path} is corrupted: md5 {actual}, expected {archive.md5}; "
                    f"delete it to download it again, or put a good copy there"
                )
        else:
            try:
                _download(archive, root)
            except DataError as error:
                raise DataError(
                    f"missing data: {_describe(archives)} not found in {root} and {error}; "
                    f"put the archives in a folder and pass --data-root DIR (or set {DATA_ENV})"
                ) from error
        paths.append(path)
    return paths
