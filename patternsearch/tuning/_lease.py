"""One holder at a time across workers and machines: a study name taken in the storage, kept alive by a heartbeat.

Creating a study is atomic in every Optuna storage (its name is unique), so
the worker whose creation succeeds holds the lease: :meth:`Lease.take`
returns that study's id, and the holder beats, checks and releases by that
id and a token of its own, never by the name, so nothing it does touches a
study another worker made under the same name after taking the lease over.

A worker that finds the name taken waits while the heartbeat changes; when
it saw the same beat for ``stale_s`` seconds of its own monotonic clock (the
holder was killed or paused), it deletes that study by its id and tries
again. No two machines' clocks are compared. The heartbeat retries a failed
write with backoff (a database that is briefly away does not end it); the
holder checks it still holds the lease before it commits its work, and a
lost lease raises :class:`LeaseLost` there. ``tune`` makes its plan under
the tuning study's own creation and confirms under a lease of its own.
"""

from __future__ import annotations

import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna

from ..errors import UsageError

HOLDER_ATTR = "lease_holder"
TOKEN_ATTR = "lease_token"
BEAT_ATTR = "lease_beat"
STALE_ENV = "PATTERNSEARCH_LEASE_STALE_S"
DEFAULT_STALE_S = 20.0
"""A holder whose beat did not change this long (ten missed heartbeats) is taken for dead."""


def worker_name() -> str:
    """``host:pid``: who holds a lease or runs a unit."""
    return f"{platform.node()}:{os.getpid()}"


def stale_seconds() -> float:
    """How long an unchanged heartbeat means a dead holder: ``$PATTERNSEARCH_LEASE_STALE_S``, else 20 s.

    Raises:
        UsageError: The variable is not a positive number.
    """
    text = os.environ.get(STALE_ENV, "").strip()
    if not text:
        return DEFAULT_STALE_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UsageError(f"{STALE_ENV} must be a positive number of seconds, got {text!r}")
    return value


class LeaseLost(Exception):
    """Another worker took the lease over (this holder was paused or silent too long): its work is not committed."""


class Lease:
    """The lease named ``name`` in ``storage``, as one worker sees it.

    Args:
        storage: The shared storage.
        name: The study name that is the lease.
        done_attr: A user attribute that marks the lease's work as done: a
            study holding it is never taken for a dead holder's.
        stale_s: Seconds an unchanged heartbeat means a dead holder
            (default :func:`stale_seconds`); the holder beats ten times as often.
        clock: The waiter's clock (monotonic seconds).
    """

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, *, done_attr: str | None = None,
                 stale_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.storage, self.name, self.done_attr, self.clock = storage, name, done_attr, clock
        self.stale_s = stale_seconds() if stale_s is None else stale_s
        self.study_id: int | None = None  # the study this worker made, while it holds the lease
        self._token = uuid.uuid4().hex
        self._lost = threading.Event()
        self._seen: dict[tuple[int, Any], tuple[Any, float]] = {}  # (study id, token) -> (beat, when first seen)

    def take(self) -> int | None:
        """Takes the lease (creates its study, marked with this worker): the study id; None while another holds it."""
        for _ in range(2):
            try:
                study_id = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], self.name)
            except optuna.exceptions.DuplicatedStudyError:
                if not self._remove_if_dead():
                    return None
                continue
            try:
                self.storage.set_study_user_attr(study_id, TOKEN_ATTR, self._token)
                self.storage.set_study_user_attr(study_id, HOLDER_ATTR, worker_name())
                self.storage.set_study_user_attr(study_id, BEAT_ATTR, 0)
            except KeyError:  # paused between the two calls and taken over meanwhile
                return None
            self.study_id = study_id
            self._lost.clear()
            return study_id
        return None

    def holder(self) -> str:
        """Who holds the lease (empty when nobody, or not yet said)."""
        try:
            return str(self.storage.get_study_user_attrs(self.storage.get_study_id_from_name(self.name))
                       .get(HOLDER_ATTR, ""))
        except KeyError:
            return ""

    def holds(self) -> bool:
        """Whether this worker still holds the lease (its study is there, with its token)."""
        if self.study_id is None:
            return False
        try:
            return self.storage.get_study_user_attrs(self.study_id).get(TOKEN_ATTR) == self._token
        except KeyError:
            return False

    def check(self) -> None:
        """Refuses to go on without the lease (call it just before committing the lease's work).

        Raises:
            LeaseLost: Another worker took it over.
        """
        if self._lost.is_set() or not self.holds():
            raise LeaseLost(f"another worker took over {self.name!r} from this one")

    def _remove_if_dead(self) -> bool:
        """Deletes the lease's study when its beat did not change for ``stale_s`` on this worker's clock."""
        try:
            study_id = self.storage.get_study_id_from_name(self.name)
            attrs = self.storage.get_study_user_attrs(study_id)
        except KeyError:
            return True
        if self.done_attr is not None and self.done_attr in attrs:
            return False
        holder, beat, now = (study_id, attrs.get(TOKEN_ATTR)), attrs.get(BEAT_ATTR), self.clock()
        seen = self._seen.get(holder)
        if seen is None or seen[0] != beat:
            self._seen[holder] = (beat, now)
            return False
        if now - seen[1] < self.stale_s:
            return False
        del self._seen[holder]  # a later study under a reused id (SQLite) is watched afresh
        try:
            self.storage.delete_study(study_id)
        except KeyError:  # another waiter removed it first
            pass
        return True

    def _beat(self, stop: threading.Event) -> None:
        """Counts the heartbeat up until ``stop``; a failed write is retried with backoff, a lost lease ends it."""
        interval = self.stale_s / 10
        beats = failures = 0
        while not stop.wait(min(interval, interval / 8 * 2 ** failures) if failures else interval):
            try:
                if not self.holds():
                    self._lost.set()
                    return
                beats += 1
                self.storage.set_study_user_attr(self.study_id, BEAT_ATTR, beats)  # type: ignore[arg-type]
                failures = 0
            except Exception:  # the database briefly away: try again soon, then less often
                failures += 1

    @contextmanager
    def beating(self) -> Iterator[None]:
        """Keeps the heartbeat going while the block runs.

        Raises:
            LeaseLost: The lease was taken over while the block ran (an error
                of the block that comes from writing to the lost study is
                reported as this).
        """
        if self.study_id is None:
            raise LeaseLost(f"{self.name!r} is not held by this worker")
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name=f"lease {self.name}", daemon=True)
        thread.start()
        try:
            yield
        except Exception as error:
            if self._lost.is_set() or not self._holds_as_far_as_known():
                raise LeaseLost(f"another worker took over {self.name!r} from this one") from error
            raise
        finally:
            stop.set()
            thread.join()
        if self._lost.is_set():
            raise LeaseLost(f"another worker took over {self.name!r} from this one")

    def _holds_as_far_as_known(self) -> bool:
        """:meth:`holds`, True when the storage cannot tell (its own error is then the one to report)."""
        try:
            return self.holds()
        except Exception:
            return True

    def release(self) -> None:
        """Gives the lease back: deletes its study, by id, when this worker still holds it."""
        if self.holds():
            try:
                self.storage.delete_study(self.study_id)  # type: ignore[arg-type]
            except KeyError:
                pass
        self.study_id = None
