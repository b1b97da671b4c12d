"""Opening Optuna storages from URLs, with heartbeats and password-safe errors."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from ..errors import StorageError

try:
    import fcntl
except ImportError:  # Windows: no local multi-process lock
    fcntl = None  # type: ignore[assignment]

DEFAULT_STORAGE = "sqlite:///studies/patternsearch.db"
DEFAULT_HEARTBEAT_S = 10


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<malformed URL>"


def _scrub(message: str, url: str) -> str:
    try:
        password = make_url(url).password
    except (sqlalchemy.exc.ArgumentError, ValueError):
        password = None
    message = " ".join(message.split())
    if password:
        message = message.replace(str(password), "***")
    return message.replace(url, safe_url(url))


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def open_storage(url: str, *, create: bool = True, heartbeat_interval: int | None = None) -> optuna.storages.RDBStorage:
    """Opens an Optuna RDB storage (sqlite, postgresql, mysql, ...).

    Args:
        url: SQLAlchemy URL.
        create: Create a missing SQLite file (and its folder). When False, a
            missing SQLite file is an error and nothing is written.
        heartbeat_interval: Seconds between trial heartbeats; a running trial
            whose heartbeat is older than three intervals is failed and
            retried with the same parameters.

    Raises:
        StorageError: One line, with the password hidden.
    """
    try:
        sqlite_path = _sqlite_path(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StorageError(f"malformed storage URL {safe_url(url)}; expected e.g. sqlite:///studies/patternsearch.db "
                           "or postgresql://user@host/db") from None
    engine_kwargs: dict[str, object] = {}
    if sqlite_path is not None:
        if not sqlite_path.exists():
            if not create:
                raise StorageError(f"no study database at {sqlite_path}")
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    options: dict[str, object] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_interval:
                options = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": 3 * heartbeat_interval,
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                }
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options)  # type: ignore[arg-type]
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()
        reason = detail[0] if detail else type(error).__name__
        raise StorageError(f"cannot open storage {safe_url(url)}: {_scrub(reason, url)}") from None


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialises study creation between local processes sharing one SQLite file.

    Several processes that start at once would otherwise race to create the
    schema and the study. Server databases need no lock: Optuna's study
    creation is safe there.
    """
    try:
        path = _sqlite_path(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        path = None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_existing_study(name: str, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """Loads a study that must exist.

    Raises:
        StorageError: If there is no such study (the message lists those there are).
    """
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StorageError(
            f"no study {name!r} in {safe_url(url)}; studies there: {', '.join(names) or 'none'}"
        ) from None
