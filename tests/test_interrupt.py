"""Ctrl-C on each long command: one line saying what is saved and how to go on, exit 130, and the rerun goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from patternsearch import create_benchmark, load_checkpoint
from patternsearch.looks import Ledger
from patternsearch.search import counts_toward_target, open_storage

SINUSOID = ["--benchmark", "sinusoid", "--shots", "5", "--device", "cpu"]


class Command:
    """A running ``patternsearch`` command whose standard error is collected as it comes."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "patternsearch", *args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=os.environ)
        self.stderr = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        while chunk := os.read(self.process.stderr.fileno(), 4096):
            self.stderr += chunk

    def interrupt_when(self, ready: Callable[[str], bool], timeout: float = 180) -> tuple[int, str]:
        """Sends SIGINT once ``ready(stderr so far)``; returns the exit code and what stderr got after the signal."""
        deadline = time.monotonic() + timeout
        while not ready(self.stderr.decode(errors="replace")):
            assert self.process.poll() is None, f"ended before it could be interrupted: {self.stderr.decode()}"
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.05)
        mark = len(self.stderr)
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=120)
        self._reader.join(timeout=10)
        assert "Traceback" not in self.stderr.decode(errors="replace")
        return code, self.stderr[mark:].decode(errors="replace")


def check_one_line(after: str, saved: str) -> None:
    assert after.count("\n") <= 2, after  # the progress bar's last state, then the one line
    last = after.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("patternsearch: interrupted:") and saved in last, last


def test_interrupted_optimize_keeps_its_trials_and_the_rerun_completes_the_study(sinusoid_checkpoint: Path,
                                                                                  tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    command = ("optimize", "--trials", "4", "--storage", storage, "--checkpoint", str(sinusoid_checkpoint),
               "--queries", "10", "--tasks", "300", "--latency-tasks", "2", "--repeats", "2", *SINUSOID)

    def trials() -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name="sinusoid-mlp-5w5s", storage=storage).get_trials(deepcopy=False)
        except KeyError:
            return []

    def one_done_one_running(_: str) -> bool:
        done = trials()
        return any(t.state == TrialState.COMPLETE for t in done) and any(
            t.state == TrialState.RUNNING and t.user_attrs.get("pattern") not in (None, "000:0") for t in done)

    code, after = Command(*command).interrupt_when(one_done_one_running)
    assert code == 130
    check_one_line(after, f"saved in {storage}")
    kept = sum(counts_toward_target(t) for t in trials())
    assert 1 <= kept < 4

    rerun = subprocess.run([sys.executable, "-m", "patternsearch", *command], capture_output=True, text=True,
                           env=os.environ, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{kept}/4 evaluated" in rerun.stderr  # it resumed rather than starting over
    assert sum(counts_toward_target(t) for t in trials()) == 4


def test_interrupted_specialize_saves_its_checkpoint_and_the_rerun_resumes(sinusoid_checkpoint: Path,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "special.pt"
    command = ("specialize", "--checkpoint", str(sinusoid_checkpoint), "--pattern", "001:3", "--iterations", "40",
               "--out", str(out), "--meta-batch", "2", "--val-every", "40", "--val-tasks", "2", "--device", "cpu")
    code, after = Command(*command).interrupt_when(lambda err: "| 3/40" in err)
    assert code == 130
    check_one_line(after, f"saved in {out}")
    iteration = load_checkpoint(out).training["iteration"]
    assert 3 <= iteration < 40

    rerun = subprocess.run([sys.executable, "-m", "patternsearch", *command], capture_output=True, text=True,
                           env=os.environ, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    first_bar = next(part for part in rerun.stderr.replace("\r", "\n").splitlines() if "meta-training" in part)
    assert f"| {iteration}/40" in first_bar  # it resumed rather than starting over
    assert load_checkpoint(out).training["iteration"] == 40


def test_interrupted_evaluate_and_select_print_one_line(sinusoid_checkpoint: Path) -> None:
    code, after = Command("evaluate", "--checkpoint", str(sinusoid_checkpoint), "--tasks", "3000",
                          *SINUSOID).interrupt_when(lambda err: "scoring" in err and "task/s" in err)
    assert code == 130
    check_one_line(after, "nothing was saved")

    # select prints nothing while it works: interrupt it well after start-up (timed here), while it scores tasks.
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "patternsearch", "--version"], check=True, capture_output=True)
    start_up = time.monotonic() - began
    # Its look at the test split is recorded once its scores are in, before anything is decided or printed: the
    # line says whether it was, and where.
    select = Command("select", "--pattern", "001:3", "--checkpoint", str(sinusoid_checkpoint), "--tasks", "5000",
                     "--device", "cpu")
    began = time.monotonic()
    code, after = select.interrupt_when(lambda _: time.monotonic() - began > 1.5 * start_up + 1)
    assert code == 130
    storage = "sqlite:///studies/patternsearch.db"
    looks = Ledger(open_storage(storage, create=False), user=False).looks(create_benchmark("sinusoid"))
    assert len(looks) <= 1 and all(look.command.startswith("select") for look in looks)
    if looks:
        check_one_line(after, f"its look at the test split of sinusoid was recorded in {storage} before its decision")
        assert "the answer is stored only when select ends" in after
    else:
        check_one_line(after, "nothing was saved (select stores its answer when it ends)")


def test_a_ctrl_c_swallowed_by_a_finalizer_is_delivered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python hands an exception raised in a finalizer to sys.unraisablehook and goes on; SIGINT landing there
    # (CI saw it in a weakref callback) would leave the command running, with a traceback printed.
    from patternsearch.cli._main import _redeliver_swallowed_interrupt

    class Finalized:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    received = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: received.set())
    monkeypatch.setattr(sys, "unraisablehook", _redeliver_swallowed_interrupt)
    try:
        Finalized()  # collected at once: its __del__ raises into the hook
        assert received.wait(5), "the swallowed Ctrl-C was not sent again"
    finally:
        signal.signal(signal.SIGINT, previous)
