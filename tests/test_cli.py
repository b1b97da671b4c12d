from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from patternsearch import cli
from patternsearch.search import counts_toward_target

TINY_SEARCH = ["--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--tasks", "12",
               "--latency-tasks", "1", "--repeats", "1", "--device", "cpu"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "patternsearch", *args], capture_output=True, text=True,
                            env=os.environ, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("patternsearch ")
    for command in ("train", "evaluate", "optimize", "select", "studies"):
        assert "usage: patternsearch " + command in run(command, "--help").stdout


def test_evaluate_json(sinusoid_checkpoint: Path) -> None:
    out = run("evaluate", "--benchmark", "sinusoid", "--shots", "5", "--checkpoint", str(sinusoid_checkpoint),
              "--pattern", "001:3", "--split", "val", "--tasks", "10", "--json", "--device", "cpu").stdout
    result = json.loads(out)
    assert result["pattern"] == "001:3" and result["tasks"] == 10 and result["split"] == "val"
    for key in ("accuracy", "ci95", "latency_ms", "flops"):
        assert isinstance(result[key], (int, float))
    full = json.loads(run("evaluate", "--benchmark", "sinusoid", "--shots", "5", "--checkpoint",
                          str(sinusoid_checkpoint), "--pattern", "full", "--tasks", "3", "--json").stdout)
    assert full["pattern"] == "111:10" and full["split"] == "val"  # explore on validation by default
    assert full["difference"] == 0.0 and full["baseline_accuracy"] == full["accuracy"]
    text = run("evaluate", "--benchmark", "sinusoid", "--shots", "5", "--checkpoint", str(sinusoid_checkpoint),
               "--pattern", "001:3", "--tasks", "3", "--device", "cpu").stdout
    metric_line = next(line for line in text.splitlines() if line.strip().startswith("neg_mse: "))
    assert " +/- " in metric_line and metric_line.endswith("(95% CI; 3 tasks)"), text
    # A look at the test split is recorded; a confirmation on that split is refused, or accepted as not covered.
    run("evaluate", "--benchmark", "sinusoid", "--shots", "5", "--checkpoint", str(sinusoid_checkpoint),
        "--pattern", "001:3", "--split", "test", "--tasks", "3", "--json")
    confirm = ("select", "--pattern", "001:3", "--checkpoint", str(sinusoid_checkpoint), "--max-degradation", "0.5",
               "--tasks", "6", "--report-tasks", "6", "--device", "cpu")
    refused = run(*confirm, check=False)
    assert refused.returncode == 2 and "scored before by a look that confirmed nothing" in refused.stderr
    assert "evaluate of 001:3, 111:10" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    accepted = run(*confirm, "--accept-test-looks").stdout
    assert "NOT covered by the guarantee" in accepted and "looked at before: evaluate of 001:3" in accepted


def test_evaluate_compares_a_phased_pattern_with_a_baseline_on_the_same_tasks(sinusoid_checkpoint: Path) -> None:
    common = ("--benchmark", "sinusoid", "--shots", "5", "--checkpoint", str(sinusoid_checkpoint), "--split", "val",
              "--tasks", "8", "--json", "--device", "cpu")
    phased = json.loads(run("evaluate", *common, "--pattern", "111:1+001:3@2", "--baseline", "111:1").stdout)
    alone = json.loads(run("evaluate", *common, "--pattern", "111:1").stdout)
    assert phased["pattern"] == "111:1+001:3@2" and phased["baseline"] == "111:1"
    assert phased["baseline_accuracy"] == pytest.approx(alone["accuracy"])
    assert phased["difference"] == pytest.approx(phased["accuracy"] - alone["accuracy"])
    assert phased["difference_ci95"] > 0


def test_optimize_studies_select_json(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    out = run("optimize", "--trials", "5", "--storage", storage, "--checkpoint", str(sinusoid_checkpoint),
              *TINY_SEARCH).stdout
    assert "Pareto front" in out and "000:0" in out
    studies = json.loads(run("studies", "--storage", storage, "--json").stdout)
    assert [(s["name"], s["complete"], s["target"]) for s in studies] == [("sinusoid-mlp-5w5s", 5, 5)]
    selection = json.loads(run("select", "--storage", storage, "--max-degradation", "0.5", "--tasks", "10",
                               "--checkpoint", str(sinusoid_checkpoint), "--json").stdout)
    assert {"pattern", "baseline", "validation", "confirmation", "fresh", "timing"} <= set(selection)
    assert {"accuracy", "baseline_accuracy"} <= set(selection["validation"])
    assert {"accuracy", "baseline_accuracy", "difference"} <= set(selection["fresh"])
    assert {"speedup", "latency_ms", "baseline_latency_ms"} <= set(selection["timing"])
    assert selection["baseline"] == "111:10" and ":" in selection["pattern"]


def test_bad_pattern_is_one_line_error(sinusoid_checkpoint: Path) -> None:
    result = run("evaluate", "--benchmark", "sinusoid", "--checkpoint", str(sinusoid_checkpoint),
                 "--pattern", "11:3", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "2 flags but the model has 3 layer groups" in result.stderr


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def test_study_killed_with_sigkill_resumes_to_exact_target(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    command = [sys.executable, "-m", "patternsearch", "optimize", "--trials", "10", "--storage", storage,
               "--study", "k", "--checkpoint", str(sinusoid_checkpoint), "--heartbeat-interval", "1",
               *TINY_SEARCH[:-8], "--tasks", "300", "--latency-tasks", "3", "--repeats", "3", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    deadline = time.monotonic() + 180
    killed_trial = None
    while time.monotonic() < deadline and process.poll() is None:
        trials = _trials(storage, "k")
        done = [t.user_attrs["pattern"] for t in trials if counts_toward_target(t)]
        # a trial in the middle of a real evaluation (not a repeat, not the instant "no adaptation")
        running = [t for t in trials if t.state == TrialState.RUNNING
                   and t.user_attrs.get("pattern") not in (None, "000:0", *done)]
        if len(done) >= 2 and running:
            process.send_signal(signal.SIGKILL)
            killed_trial = running[0].number
            break
        time.sleep(0.02)
    process.wait(timeout=30)
    assert killed_trial is not None, "the study ended before it could be killed"
    left = _trials(storage, "k")
    assert any(t.state == TrialState.RUNNING for t in left)
    assert sum(counts_toward_target(t) for t in left) < 10

    subprocess.run(command, check=True, capture_output=True, env=os.environ, timeout=300)
    trials = _trials(storage, "k")
    assert sum(counts_toward_target(t) for t in trials) == 10  # complete or stopped early
    assert not any(t.state == TrialState.RUNNING for t in trials)
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert retried and counts_toward_target(retried[0])


def test_specialize_then_compare_with_the_parent_in_evaluate_and_select(sinusoid_checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    special = tmp_path / "special.pt"
    out = run("specialize", "--checkpoint", str(sinusoid_checkpoint), "--pattern", "001:3", "--iterations", "2",
              "--out", str(special), "--meta-batch", "2", "--val-every", "2", "--val-tasks", "2", "--device", "cpu")
    assert "pattern 001:3" in out.stdout and special.is_file()
    common = ("--benchmark", "sinusoid", "--shots", "5", "--split", "val", "--tasks", "8", "--json", "--device", "cpu")
    paired = json.loads(run("evaluate", *common, "--checkpoint", str(special), "--pattern", "001:3",
                            "--baseline-checkpoint", str(sinusoid_checkpoint)).stdout)
    parent_full = json.loads(run("evaluate", *common, "--checkpoint", str(sinusoid_checkpoint)).stdout)
    assert paired["baseline_checkpoint"] == str(sinusoid_checkpoint) and paired["checkpoint"] == str(special)
    assert paired["baseline_accuracy"] == pytest.approx(parent_full["accuracy"])
    assert paired["difference"] == pytest.approx(paired["accuracy"] - parent_full["accuracy"])
    selection = json.loads(run("select", "--pattern", "001:3", "--checkpoint", str(special), "--baseline-checkpoint",
                               str(sinusoid_checkpoint), "--max-degradation", "0.5", "--tasks", "10",
                               "--report-tasks", "10", "--device", "cpu", "--json").stdout)
    assert selection["validation"]["study"] is None and selection["baseline"] == "111:10"
    assert [c["pattern"] for c in selection["confirmation"]["candidates"]] == ["001:3"]
    assert selection["confirmation"]["candidates"][0]["lower_bound"] is not None
    assert selection["pattern"] == ("001:3" if selection["confirmed"] else "111:10")
    assert selection["checkpoint"] == str(special if selection["confirmed"] else sinusoid_checkpoint)  # the answer's
    assert selection["baseline_checkpoint"] == str(sinusoid_checkpoint)
    other = tmp_path / "other.pt"
    run("train", "--benchmark", "sinusoid", "--model", "mlp", "--shots", "3", "--iterations", "1", "--val-tasks",
        "2", "--device", "cpu", "--checkpoint", str(other))
    refused = run("evaluate", *common, "--checkpoint", str(special), "--baseline-checkpoint", str(other), check=False)
    assert refused.returncode == 2 and "5-way 3-shot" in refused.stderr and refused.stderr.count("\n") == 1


def test_evaluate_is_a_python_function_whose_result_the_command_prints(sinusoid_checkpoint: Path) -> None:
    import patternsearch as ps

    from .conftest import SINUSOID

    experiment = ps.open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    result = ps.evaluate(experiment, "001:3", tasks=4, repeats=1)
    assert isinstance(result, ps.Evaluation) and result.pattern == "001:3" and result.accuracy.tasks == 4
    assert result.difference.mean == pytest.approx(result.accuracy.mean - result.baseline_accuracy.mean)
    printed = json.loads(run("evaluate", "--benchmark", "sinusoid", "--shots", "5", "--queries", "10",
                             "--checkpoint", str(sinusoid_checkpoint), "--pattern", "001:3", "--tasks", "4",
                             "--repeats", "1", "--json", "--device", "cpu").stdout)
    assert {k: printed[k] for k in ("pattern", "accuracy", "difference", "tasks")} == {
        k: result.to_dict()[k] for k in ("pattern", "accuracy", "difference", "tasks")}
    assert result.describe().startswith("pattern 001:3 on 4 val tasks (")


@pytest.mark.parametrize(("command", "name"), [
    (["train"], "train_seed"),
    (["specialize", "--pattern", "001:1", "--iterations", "1", "--out", "x.pt"], "train_seed"),
    (["optimize"], "sampler_seed"), (["evaluate"], "task_seed"), (["bench", "--patterns", "full"], "task_seed"),
    (["select"], "test_seed"), (["tune"], "test_seed"),
])
def test_seeds_are_named_by_what_they_seed_and_the_old_seed_still_works_with_a_warning(
        command: list[str], name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    flag = "--" + name.replace("_", "-")
    assert getattr(parser.parse_args([*command, flag, "7"]), name) == 7
    assert capsys.readouterr().err == ""
    assert getattr(parser.parse_args([*command, "--seed", "7"]), name) == 7
    assert f"--seed is deprecated (each command seeded something else with it); use {flag}" in capsys.readouterr().err
