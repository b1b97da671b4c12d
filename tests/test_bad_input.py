"""Every bad input: a one-line error, a non-zero exit code, and the study database left as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from patternsearch import load_checkpoint, optimize, save_checkpoint
from patternsearch.models import create_model

from .conftest import SHARED_OMNIGLOT
from .conftest import SINUSOID as SINUSOID_SPEC


@pytest.fixture(scope="module")
def world(sinusoid_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A study database with trials, an empty study, and broken checkpoints and data."""
    root = tmp_path_factory.mktemp("bad")
    db = root / "studies.db"
    storage = f"sqlite:///{db}"
    optimize(2, SINUSOID_SPEC.but(checkpoint=sinusoid_checkpoint), tasks=6, latency_tasks=1, repeats=1, storage=storage,
             study_name="good", progress=False)
    optuna.create_study(study_name="empty", storage=storage, directions=["minimize", "maximize"])
    data = sinusoid_checkpoint.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 3])
    (root / "corrupted.pt").write_bytes(b"\x00" * 64 + data[64:])
    other = load_checkpoint(sinusoid_checkpoint)
    other.state_dict = create_model("mlp", 1, hidden=20).state_dict()
    save_checkpoint(other, root / "other-architecture.pt")
    broken_data = root / "broken-data"
    broken_data.mkdir()
    (broken_data / "images_background_small1.zip").write_bytes(b"PK\x03\x04 truncated")
    shutil.copy(SHARED_OMNIGLOT / "images_background_small2.zip", broken_data)
    return {"db": str(db), "storage": storage, "ckpt": str(sinusoid_checkpoint), "root": str(root),
            "broken_data": str(broken_data)}


SINUSOID = ["--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--device", "cpu"]
SEARCH = [*SINUSOID, "--tasks", "6", "--latency-tasks", "1", "--repeats", "1"]

CASES = {
    "unknown benchmark": (["evaluate", "--benchmark", "nope"], "unknown benchmark 'nope'; available:"),
    "unknown model": (["evaluate", *SINUSOID, "--model", "nope", "--checkpoint", "{ckpt}"], "unknown model 'nope'"),
    "malformed pattern": (["evaluate", *SINUSOID, "--checkpoint", "{ckpt}", "--pattern", "1x1:3"],
                          "malformed pattern '1x1:3'"),
    "pattern of wrong length": (["evaluate", *SINUSOID, "--checkpoint", "{ckpt}", "--pattern", "11111:3"],
                                "5 flags but the model has 3 layer groups"),
    "malformed baseline": (["optimize", *SEARCH, "--checkpoint", "{ckpt}", "--storage", "{storage}",
                            "--study", "good", "--baseline", "11:x"], "malformed pattern"),
    "zero trials": (["optimize", *SEARCH, "--checkpoint", "{ckpt}", "--storage", "{storage}", "--study", "good",
                     "--trials", "0"], "--trials must be at least 1"),
    "negative trials": (["optimize", *SEARCH, "--checkpoint", "{ckpt}", "--storage", "{storage}", "--study", "good",
                         "--trials", "-5"], "--trials must be at least 1"),
    "degradation below 0": (["select", "--storage", "{storage}", "--study", "good", "--max-degradation", "-0.1"],
                            "between 0 and 1"),
    "degradation above 1": (["select", "--storage", "{storage}", "--study", "good", "--max-degradation", "1.5"],
                            "between 0 and 1"),
    "zero tasks (optimize)": (["optimize", *SINUSOID, "--checkpoint", "{ckpt}", "--storage", "{storage}",
                               "--study", "good", "--tasks", "0"], "--tasks must be at least 1"),
    "zero tasks (evaluate)": (["evaluate", *SINUSOID, "--checkpoint", "{ckpt}", "--tasks", "0"],
                              "must be a positive integer"),
    "unreachable database": (["studies", "--storage", "postgresql://alice:s3cret-pw@127.0.0.1:1/none"],
                             "cannot open storage postgresql://alice:***@127.0.0.1:1/none"),
    "select with one report task": (["select", "--storage", "{storage}", "--study", "good", "--report-tasks", "1"],
                                    "--tasks and --report-tasks must be at least 2, got 600 and 1"),
    "tune with one confirmation task (the same settings as select)": (
        ["tune", *SINUSOID, "--checkpoint", "{ckpt}", "--storage", "{storage}", "--study", "good", "--tasks", "1"],
        "--tasks and --report-tasks must be at least 2, got 1 and 1"),
    "select --pattern with study options": (["select", "--pattern", "001:3", "--checkpoint", "{ckpt}", "--study",
                                             "good", "--no-confirm"],
                                            "--no-confirm, --study do not apply with --pattern"),
    "select --baseline without --pattern": (["select", "--storage", "{storage}", "--study", "good", "--baseline",
                                             "001:3"], "--baseline applies only with --pattern"),
    "specialize from a default checkpoint that is not there (found without reading data)": (
        ["specialize", "--benchmark", "omniglot", "--model", "conv4", "--pattern", "00010:1", "--iterations", "1",
         "--out", "{root}/special.pt"], "checkpoint not found: "),
    "malformed database URL": (["select", "--storage", "not a url", "--study", "good"], "malformed storage URL"),
    "missing sqlite database": (["select", "--storage", "sqlite:///{root}/absent.db"], "no study database at"),
    "checkpoint of another architecture": (["evaluate", *SINUSOID, "--checkpoint", "{root}/other-architecture.pt"],
                                           "checkpoint does not fit model 'mlp': shape mismatch fc1.bias"),
    "truncated checkpoint": (["evaluate", *SINUSOID, "--checkpoint", "{root}/truncated.pt"],
                             "truncated or corrupted"),
    "corrupted checkpoint": (["optimize", *SEARCH, "--checkpoint", "{root}/corrupted.pt", "--storage", "{storage}",
                              "--study", "good"], "truncated or corrupted"),
    "missing checkpoint": (["evaluate", *SINUSOID, "--checkpoint", "{root}/absent.pt"], "no checkpoint at"),
    "missing data folder": (["evaluate", "--data-root", "{root}/no-such-folder"], "does not exist"),
    "corrupted archive": (["evaluate", "--data-root", "{broken_data}"],
                          "images_background_small1.zip is corrupted: md5"),
    "study configuration mismatch": (["optimize", *SINUSOID, "--tasks", "7", "--latency-tasks", "1", "--repeats",
                                      "1", "--checkpoint", "{ckpt}", "--storage", "{storage}", "--study", "good"],
                                     "tasks: 6 -> 7"),
    "select on a missing study": (["select", "--storage", "{storage}", "--study", "nope"],
                                  "no study 'nope' in sqlite:///"),
    "select on a study without trials": (["select", "--storage", "{storage}", "--study", "empty"],
                                         "has no completed trial"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, world: dict[str, str]) -> None:
    args, expected = CASES[case]
    before = Path(world["db"]).read_bytes()
    result = subprocess.run([sys.executable, "-m", "patternsearch", *(a.format(**world) for a in args)],
                            capture_output=True, text=True, env=os.environ, timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in lines[0], lines[0]
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert Path(world["db"]).read_bytes() == before
    assert not (Path(world["root"]) / "absent.db").exists()


def test_a_request_the_study_refuses_is_refused_in_seconds_before_any_training(world: dict[str, str]) -> None:
    # `--ways 20` on a 5-way study once meta-trained a 20-way checkpoint first, then refused.
    before = optuna.load_study(study_name="good", storage=world["storage"])
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "patternsearch", "optimize", *SEARCH, "--ways", "20", "--storage",
                             world["storage"], "--study", "good", "--trials", "5"],
                            capture_output=True, text=True, env=os.environ, timeout=60)
    elapsed = time.monotonic() - began
    assert result.returncode == 2 and "ways: 5 -> 20" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and elapsed < 10, elapsed
    after = optuna.load_study(study_name="good", storage=world["storage"])
    assert len(after.trials) == len(before.trials) and after.user_attrs == before.user_attrs
    assert not list(Path(os.environ["PATTERNSEARCH_HOME"]).rglob("*.pt"))  # no checkpoint was trained
