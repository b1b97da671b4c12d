"""Storage and file-system failures while a command runs: one line naming what failed and what is saved, exit 1."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from patternsearch import cli, load_checkpoint
from patternsearch.search import optimize

from .conftest import SINUSOID

TRAIN = ["train", "--benchmark", "sinusoid", "--model", "mlp", "--shots", "5", "--queries", "10", "--meta-batch", "2",
         "--val-every", "2", "--val-tasks", "2", "--checkpoint-every", "1", "--device", "cpu"]


def one_error_line(err: str) -> str:
    """The one line the command printed about the failure: its last, without a traceback."""
    lines = err.replace("\r", "\n").strip().splitlines()
    assert "Traceback" not in err and "Exception" not in err, err
    assert [line for line in lines if line.startswith("patternsearch:")] == lines[-1:], err
    assert lines[-1].startswith("patternsearch: error: "), lines[-1]
    return lines[-1]


def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_last_one_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "run.pt"
    assert cli.main([*TRAIN, "--iterations", "2", "--checkpoint", str(checkpoint), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)  # train --json: what it wrote
    assert trained["checkpoint"] == str(checkpoint) and trained["iteration"] == 2
    before = checkpoint.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # every file written from now on finds the disk full
    assert cli.main([*TRAIN, "--iterations", "4", "--checkpoint", str(checkpoint)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"No space left on device: {checkpoint}" in line
    assert f"the meta-training so far is saved in {checkpoint}; run the same command again to resume it" in line
    assert checkpoint.read_bytes() == before and load_checkpoint(checkpoint).training["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # nothing half-written beside it
    # Nothing written yet: nothing is said to be saved.
    assert cli.main([*TRAIN, "--iterations", "2", "--checkpoint", str(tmp_path / "new.pt")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "nothing was saved; run the same command again to start over" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_sqlite_locked_past_its_timeout_is_one_line(sinusoid_checkpoint: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import patternsearch.search._summary as summary

    database = tmp_path / "s.db"
    storage = f"sqlite:///{database}"
    optimize(2, SINUSOID.but(checkpoint=str(sinusoid_checkpoint)), storage=storage, study_name="s", tasks=6,
             latency_tasks=1, repeats=1, progress=False)
    connect = sqlite3.dbapi2.connect
    monkeypatch.setattr(sqlite3.dbapi2, "connect", lambda *args, **kwargs: connect(*args, **{**kwargs, "timeout": 0.2}))
    holder = connect(database, isolation_level=None)
    opened = summary.open_storage

    def open_then_locked(*args: Any, **kwargs: Any) -> Any:
        rdb = opened(*args, **kwargs)
        holder.execute("BEGIN EXCLUSIVE")  # another process writing, past the timeout
        return rdb

    monkeypatch.setattr(summary, "open_storage", open_then_locked)
    capsys.readouterr()
    try:
        assert cli.main(["studies", "--storage", storage]) == 1
    finally:
        holder.rollback()
        holder.close()
    line = one_error_line(capsys.readouterr().err)
    assert f"the study storage {storage} failed (database is locked); nothing was saved" in line


def test_a_database_that_goes_away_mid_run_is_one_line_and_keeps_the_finished_trials(
        sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    """``optimize`` on a PostgreSQL database of its own, which stops accepting connections and drops the
    command's (as a restart does) once a trial is complete: one line naming the storage (no password), exit 1,
    and the complete trials are in the database."""
    database = f"failures_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine("postgresql://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
    storage = f"postgresql://postgres:s3cret-pw@127.0.0.1:5432/{database}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    try:
        log = tmp_path / "optimize.err"
        with log.open("w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "patternsearch", "optimize", "--benchmark", "sinusoid", "--shots", "5",
                 "--queries", "10", "--device", "cpu", "--checkpoint", str(sinusoid_checkpoint), "--storage", storage,
                 "--study", "s", "--trials", "200", "--tasks", "20", "--latency-tasks", "1", "--repeats", "1",
                 ], stdout=subprocess.DEVNULL, stderr=err, env=os.environ)
            try:
                deadline = time.monotonic() + 180
                while not _complete_trials(storage):
                    assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                    time.sleep(0.2)
                with admin.connect() as connection:
                    connection.execute(sqlalchemy.text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false"))
                    connection.execute(sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": database})
                code = process.wait(timeout=120)
            finally:
                process.kill()
        err_text = log.read_text()
        assert code == 1, err_text[-2000:]
        line = one_error_line(err_text)
        assert f"the study storage postgresql://postgres:***@127.0.0.1:5432/{database} failed (" in line
        assert "the finished trials are saved in" in line and "s3cret-pw" not in err_text
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        assert _complete_trials(storage)  # what was finished is there for the rerun
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
            connection.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": database})
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {database}"))
        admin.dispose()


def _complete_trials(storage: str) -> int:
    engine = sqlalchemy.create_engine(storage)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sqlalchemy.text(
                "SELECT count(*) FROM trials WHERE state = 'COMPLETE'")).scalar() or 0)
    except sqlalchemy.exc.SQLAlchemyError:  # not made yet
        return 0
    finally:
        engine.dispose()

