"""Several workers on one study, against the real database servers on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from patternsearch.search import counts_toward_target

SERVERS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
TARGET = 12


def _worker(storage: str, study: str, checkpoint: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "patternsearch", "optimize", "--storage", storage, "--study", study,
               "--trials", str(TARGET), "--checkpoint", str(checkpoint), "--benchmark", "sinusoid", "--shots", "5",
               "--queries", "10", "--tasks", "300", "--latency-tasks", "3", "--repeats", "3", "--device", "cpu",
               "--heartbeat-interval", "1"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_three_workers_one_killed_reach_exact_target(backend: str, sinusoid_checkpoint: Path,
                                                     tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/shared.db" if backend == "sqlite" else SERVERS[backend]
    study = f"workers-{uuid.uuid4().hex[:12]}"
    workers = {}
    for _ in range(3):
        process = _worker(storage, study, sinusoid_checkpoint)
        workers[process.pid] = process
    killed_trial = None
    deadline = time.monotonic() + 240
    try:
        while killed_trial is None and time.monotonic() < deadline:
            trials = _trials(storage, study)
            done = {t.user_attrs.get("pattern") for t in trials if t.state == TrialState.COMPLETE}
            for trial in trials:
                pid = int(str(trial.user_attrs.get("worker", ":0")).rpartition(":")[2])
                pattern = trial.user_attrs.get("pattern")
                if (trial.state == TrialState.RUNNING and pid in workers and len(done) >= 2
                        and pattern not in (None, "000:0", *done)):
                    victim = workers.pop(pid)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    if next(t for t in _trials(storage, study) if t.number == trial.number).state \
                            != TrialState.RUNNING:  # it finished (or stopped early) before the signal: try again
                        replacement = _worker(storage, study, sinusoid_checkpoint)
                        workers[replacement.pid] = replacement
                    else:
                        killed_trial = trial.number
                    break
            time.sleep(0.02)
        assert killed_trial is not None, "no worker could be killed mid-trial"
        for process in workers.values():
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
    finally:
        for process in workers.values():
            process.kill()

    trials = _trials(storage, study)
    counted = [t for t in trials if counts_toward_target(t)]  # complete or stopped early
    assert len(counted) == TARGET
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = next(t for t in trials if t.number == killed_trial)
    assert killed.state == TrialState.FAIL
    # Its retry was enqueued with its parameters, and those parameters were evaluated within the target: by the
    # retry, or by a survivor that had drawn the same pattern and was waiting on the dead trial when it failed it
    # (the retry then comes after the target and is retired as surplus).
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert retries and all(t.params == killed.params for t in retries)
    assert [t for t in counted if t.params == killed.params and t.number > killed_trial]
    baseline_runs = [t for t in counted if t.user_attrs["pattern"] == "111:10" and "repeat_of" not in t.user_attrs]
    assert len(baseline_runs) == 1
    if backend != "sqlite":
        optuna.delete_study(study_name=study, storage=storage)


def test_a_retry_left_waiting_at_the_target_is_retired_as_surplus(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    # SQLite lets two workers fail the same dead worker's trial, and each enqueues its retry: once the target is
    # reached, the copy nobody runs must not stay WAITING.
    from patternsearch.search import optimize

    from .conftest import SINUSOID

    storage = f"sqlite:///{tmp_path}/s.db"
    spec = SINUSOID.but(checkpoint=str(sinusoid_checkpoint))
    tiny = dict(tasks=6, latency_tasks=1, repeats=1, progress=False, study_name="retired")
    study = optimize(3, spec, storage=storage, **tiny)
    last = study.trials[-1]
    study.add_trial(optuna.trial.create_trial(  # the second copy of a retry, as the storage's callback makes it
        state=TrialState.WAITING, params=last.params, distributions=last.distributions,
        system_attrs={"failed_trial": last.number}))
    study.enqueue_trial(last.params)  # a user's: kept for a larger target
    optimize(3, spec, storage=storage, **tiny)
    trials = _trials(storage, "retired")
    assert sum(counts_toward_target(t) for t in trials) == 3
    assert trials[-2].state == TrialState.PRUNED and trials[-2].user_attrs["surplus"] is True
    assert trials[-1].state == TrialState.WAITING
