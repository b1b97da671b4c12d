"""Leases: one holder at a time, by id and token; a heartbeat that survives a blip; staleness on the waiter's clock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import types
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest

from patternsearch.tuning import _lease
from patternsearch.tuning._lease import BEAT_ATTR, Lease, LeaseLost, worker_name

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_has_one_holder_and_passes_on_when_its_beat_stops_changing() -> None:
    storage, clock = optuna.storages.InMemoryStorage(), Clock()
    first, second = Lease(storage, "plan", stale_s=20), Lease(storage, "plan", stale_s=20, clock=clock)
    taken = first.take()
    assert taken is not None and second.take() is None and second.holder() == worker_name()
    clock.now = 19.0
    assert second.take() is None  # 19 s of its own clock without a change: still alive
    storage.set_study_user_attr(taken, BEAT_ATTR, 1)  # a beat: the count starts again
    clock.now = 30.0
    assert second.take() is None
    clock.now = 50.1  # 20.1 s since the beat changed: its holder was killed or paused
    replaced = second.take()
    assert replaced is not None and replaced != taken and storage.get_study_id_from_name("plan") == replaced
    # The first holder, back, has lost the lease: it commits nothing, and its release deletes nothing of the other's.
    assert not first.holds() and second.holds()
    with pytest.raises(LeaseLost):
        first.check()
    first.release()
    assert storage.get_study_id_from_name("plan") == replaced
    done = Lease(storage, "plan", done_attr="finished", stale_s=20, clock=clock)
    storage.set_study_user_attr(replaced, "finished", True)
    assert done.take() is None
    clock.now = 1000.0
    assert done.take() is None  # finished work is never taken for a dead holder's
    second.release()
    assert done.take() is not None


def test_the_heartbeat_survives_failed_writes_and_a_lost_lease_is_reported() -> None:
    class Blips(optuna.storages.InMemoryStorage):
        """Fails the first two heartbeat writes, as a database that was briefly away."""

        failures = 2

        def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
            if key == BEAT_ATTR and value != 0 and self.failures:
                self.failures -= 1
                raise optuna.exceptions.StorageInternalError("connection lost")
            super().set_study_user_attr(study_id, key, value)

    storage = Blips()
    lease = Lease(storage, "confirm", stale_s=0.5)
    study_id = lease.take()
    assert study_id is not None
    with lease.beating():
        deadline = time.monotonic() + 10
        while storage.get_study_user_attrs(study_id)[BEAT_ATTR] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert storage.failures == 0 and storage.get_study_user_attrs(study_id)[BEAT_ATTR] >= 3
    # Taken over while it works (its study deleted by a waiter): the block ends with LeaseLost, not its own error.
    with pytest.raises(LeaseLost), lease.beating():
        storage.delete_study(study_id)
        storage.set_study_user_attr(study_id, "answer", 1)  # the write a paused holder makes when it resumes


def test_a_bad_staleness_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from patternsearch.errors import UsageError

    monkeypatch.setenv("PATTERNSEARCH_LEASE_STALE_S", "soon")
    with pytest.raises(UsageError, match="PATTERNSEARCH_LEASE_STALE_S must be a positive number"):
        Lease(optuna.storages.InMemoryStorage(), "x")
    monkeypatch.setenv("PATTERNSEARCH_LEASE_STALE_S", "2.5")
    assert Lease(optuna.storages.InMemoryStorage(), "x").stale_s == 2.5


def test_a_waiter_whose_clock_is_a_minute_ahead_does_not_take_a_live_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL: a holder in another process beats; the waiter's wall clock runs 60 s ahead of it."""
    from patternsearch.search import open_storage

    name, stale = f"lease-{uuid.uuid4().hex[:12]}", 1.0
    monkeypatch.setenv("PATTERNSEARCH_LEASE_STALE_S", str(stale))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from patternsearch.search import open_storage
        from patternsearch.tuning._lease import Lease
        lease = Lease(open_storage({POSTGRES!r}), {name!r})
        assert lease.take()
        print("held", flush=True)
        with lease.beating():
            sys.stdin.read()  # until the test closes it
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ)
    storage = open_storage(POSTGRES)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        real = time.time
        monkeypatch.setattr(_lease, "time", types.SimpleNamespace(time=lambda: real() + 60.0,
                                                                  monotonic=time.monotonic, sleep=time.sleep))
        waiter = Lease(storage, name)
        deadline = time.monotonic() + 4 * stale
        while time.monotonic() < deadline:
            assert not waiter.take(), "a live holder's lease was taken"
            time.sleep(stale / 5)
        holder.kill()  # now its beat stops: the lease passes on after `stale` seconds of the waiter's clock
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10 * stale
        while not waiter.take():
            assert time.monotonic() < deadline, "a dead holder's lease was never taken"
            time.sleep(stale / 5)
        waiter.release()
    finally:
        holder.kill()
        try:
            storage.delete_study(storage.get_study_id_from_name(name))
        except KeyError:
            pass


def test_a_paused_planner_and_a_confirmer_cut_off_from_the_database_make_one_plan_and_one_answer(
        sinusoid_checkpoint: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, postgres_database: str) -> None:
    """Two ``tune`` processes on PostgreSQL: A is SIGSTOPped while it plans, past the stale time, so B takes over,
    plans and works; A resumes (it deletes nothing and commits no plan of its own) and shares the work; then the
    confirming worker's database connections are terminated. One plan, each unit once, one look, one answer.
    """
    import json
    import signal

    import sqlalchemy
    from optuna.trial import TrialState

    from patternsearch import create_benchmark
    from patternsearch.looks import Ledger
    from patternsearch.search import open_storage, optimize
    from patternsearch.tuning import load_result

    from .conftest import SINUSOID

    stale = 3.0
    monkeypatch.setenv("PATTERNSEARCH_LEASE_STALE_S", str(stale))
    name = f"lease-{uuid.uuid4().hex[:12]}"
    optimize(12, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=postgres_database, study_name=name,
             tasks=12, latency_tasks=1, repeats=1, progress=False, heartbeat_interval=2)
    storage, began = open_storage(postgres_database), time.time()

    def start(worker: str) -> tuple[subprocess.Popen[str], Any]:
        log = (tmp_path / f"{worker}.err").open("w")  # a file: a full pipe would stall the worker
        url = f"{postgres_database}?application_name={name}-{worker}"  # its connections, to terminate them
        return subprocess.Popen(
            [sys.executable, "-m", "patternsearch", "tune", "--storage", url, "--study", name, "--checkpoint",
             str(sinusoid_checkpoint), "--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--device",
             "cpu", "--max-degradation", "1.0", "--budget", "2s", "--candidates", "1", "--margin", "5",
             "--val-tasks", "8", "--tasks", "150", "--report-tasks", "10", "--out", str(tmp_path / "out"),
             "--heartbeat-interval", "1", "--json"],
            stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}), log

    def attrs(study: str) -> dict[str, Any] | None:
        try:
            return storage.get_study_user_attrs(storage.get_study_id_from_name(study))
        except KeyError:
            return None

    def wait_for(what: str, ready: Any, timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := ready()):
            assert time.monotonic() < deadline, f"never {what}: " + (tmp_path / "a.err").read_text()[-1500:]
            time.sleep(0.02)
        return found

    (a, a_log), b = start("a"), None
    try:
        planning = wait_for("planning", lambda: (found := attrs(f"{name}.tune")) is not None and "tune_plan" not in
                            found and str(found.get("lease_holder", "")).endswith(f":{a.pid}"))
        assert planning
        engine = sqlalchemy.create_engine(postgres_database)
        while True:  # paused between two transactions (one paused inside its own would hold its locks)
            a.send_signal(signal.SIGSTOP)
            with engine.connect() as connection:
                busy = connection.execute(sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app AND state <> 'idle'"),
                    {"app": f"{name}-a"}).scalar()
            if not busy:
                break
            a.send_signal(signal.SIGCONT)
            time.sleep(0.005)
        assert "tune_plan" not in (attrs(f"{name}.tune") or {}), "paused too late"
        paused_id = storage.get_study_id_from_name(f"{name}.tune")
        b, b_log = start("b")
        wait_for("planned by b", lambda: "tune_plan" in (attrs(f"{name}.tune") or {}), timeout=240)
        planned_id = storage.get_study_id_from_name(f"{name}.tune")
        assert planned_id != paused_id  # b replaced the paused planner's study
        a.send_signal(signal.SIGCONT)
        confirming = wait_for("confirming", lambda: str((attrs(f"{name}.tune.confirming") or {})
                                                        .get("lease_holder", "")), timeout=240)
        worker = "a" if confirming.endswith(f":{a.pid}") else "b"
        with engine.connect() as connection:
            cut = connection.execute(sqlalchemy.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :app"),
                {"app": f"{name}-{worker}"}).scalar()
        engine.dispose()
        assert cut
        answers = []
        for process, log, which in ((a, a_log, "a"), (b, b_log, "b")):
            out, _ = process.communicate(timeout=300)
            log.close()
            err = Path(log.name).read_text()
            if which == worker and process.returncode == 1:  # cut off in a query: one line, the other confirms
                last = err.strip().splitlines()[-1]
                assert "Traceback" not in err and last.startswith("patternsearch: error: the study storage "), err
                continue
            assert process.returncode == 0, err[-2000:]
            answers.append(json.loads(out)["selection"])
    finally:
        for process in (a, b):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
    stored = load_result(postgres_database, name)
    assert stored is not None and answers
    assert all(answer == json.loads(json.dumps(stored.to_dict()))["selection"] for answer in answers)  # the one
    assert "another worker took over the tuning's plan" in (tmp_path / "a.err").read_text()
    assert storage.get_study_id_from_name(f"{name}.tune") == planned_id  # b's study, never deleted
    trials = optuna.load_study(study_name=f"{name}.tune", storage=storage).get_trials(deepcopy=False)
    complete = sorted((t.user_attrs["rung"], t.user_attrs["slot"]) for t in trials
                      if "rung" in t.user_attrs and t.state == TrialState.COMPLETE)
    assert complete == [(0, 0)]  # one plan's unit, once
    looks = [entry for entry in Ledger(storage, user=False).entries(create_benchmark("sinusoid"))
             if entry.look is not None and entry.look.command == "tune" and entry.look.when >= began]
    assert len(looks) == 1 and answers[0]["confirmation"]["look"]["number"] == looks[0].number
