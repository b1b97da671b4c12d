"""One holder at a time across workers and machines: a study name taken in the storage, kept alive by a heartbeat.

Creating a study is atomic in every Optuna storage (its name is unique), so
the worker whose creation succeeds holds the lease; it refreshes a heartbeat
attribute while it works. A worker that finds the name taken waits while the
heartbeat is fresh; when it is stale (the holder was killed), it deletes
that study by its id (ids are never reused, so a newer holder's lease is
never deleted) and tries again. ``tune`` makes its plan under the tuning
study's own creation and confirms under a lease of its own.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import optuna

HOLDER_ATTR = "lease_holder"
BEAT_ATTR = "lease_beat"
BEAT_S = 2.0
STALE_S = 20.0
"""A holder silent this long is taken for dead (ten missed heartbeats)."""


def worker_name() -> str:
    """``host:pid``: who holds a lease or runs a unit."""
    return f"{platform.node()}:{os.getpid()}"


class Lease:
    """The lease named ``name`` in ``storage``, as one worker sees it.

    Args:
        storage: The shared storage.
        name: The study name that is the lease.
        done_attr: A user attribute that marks the lease's work as done: a
            study holding it is never taken for a dead holder's.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, *, done_attr: str | None = None) -> None:
        self.storage, self.name, self.done_attr = storage, name, done_attr
        self._silent_since: dict[int, float] = {}  # study id -> when this worker first saw it without a heartbeat

    def take(self) -> bool:
        """Takes the lease (creating its study, marked with this worker); False while another holds it."""
        for _ in range(2):
            try:
                study_id = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], self.name)
            except optuna.exceptions.DuplicatedStudyError:
                if not self._remove_if_dead():
                    return False
                continue
            self.storage.set_study_user_attr(study_id, HOLDER_ATTR, worker_name())
            self.storage.set_study_user_attr(study_id, BEAT_ATTR, time.time())
            return True
        return False

    def holder(self) -> str:
        """Who holds the lease (empty when nobody, or not yet said)."""
        try:
            return str(self.storage.get_study_user_attrs(self.storage.get_study_id_from_name(self.name))
                       .get(HOLDER_ATTR, ""))
        except KeyError:
            return ""

    def _remove_if_dead(self) -> bool:
        """Deletes the lease's study when its holder stopped beating; whether it is gone."""
        try:
            study_id = self.storage.get_study_id_from_name(self.name)
            attrs = self.storage.get_study_user_attrs(study_id)
        except KeyError:
            return True
        if self.done_attr is not None and self.done_attr in attrs:
            return False
        beat = attrs.get(BEAT_ATTR)
        last = float(beat) if beat is not None else self._silent_since.setdefault(study_id, time.time())
        if time.time() - last < STALE_S:
            return False
        try:
            self.storage.delete_study(study_id)
        except KeyError:  # another waiter removed it first
            pass
        return True

    @contextmanager
    def beating(self) -> Iterator[None]:
        """Keeps the heartbeat fresh while the block runs."""
        study_id = self.storage.get_study_id_from_name(self.name)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(BEAT_S):
                try:
                    self.storage.set_study_user_attr(study_id, BEAT_ATTR, time.time())
                except Exception:  # removed, or the database briefly away: the holder's own writes find out
                    return

        thread = threading.Thread(target=beat, name=f"lease {self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Gives the lease back (deletes its study)."""
        try:
            self.storage.delete_study(self.storage.get_study_id_from_name(self.name))
        except KeyError:
            pass
