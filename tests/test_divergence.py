"""A divergence is an answer, not a traceback: scorers count it, confirmations report it, ``tune`` drops it."""

from __future__ import annotations

from pathlib import Path

import pytest

from patternsearch import cli, confirm_pattern, open_experiment
from patternsearch.confirmation import CandidateTest
from patternsearch.errors import AdaptationDiverged
from patternsearch.measurement import CachedScorer

from .conftest import SINUSOID

DIVERGING = "111:3@1000000"  # a step size a million times the checkpoint's


def test_the_scorer_counts_the_diverged_tasks_over_every_shard(sinusoid_checkpoint: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    tasks = experiment.tasks("val", 12, 0)
    scorer = CachedScorer(experiment.model, experiment.benchmark, tasks, experiment.inner_lr)
    with pytest.raises(AdaptationDiverged, match="diverged .* on 12 of 12 tasks") as raised:
        scorer.scores(experiment.pattern(DIVERGING))
    assert (raised.value.diverged, raised.value.tasks) == (12, 12)
    assert isinstance(raised.value, FloatingPointError)  # code that caught the old error still does


def test_a_diverging_pattern_is_not_confirmed_and_says_so(sinusoid_checkpoint: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'looks.db'}"
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    result = confirm_pattern(experiment, DIVERGING, 0.5, storage=storage, test_tasks=6, report_tasks=6,
                             timed_tasks=1, timed_rounds=1)
    assert not result.confirmed and result.pattern == result.baseline
    assert result.confirmation.candidates[0].diverged == 6 and "diverged" in result.reason
    args = ["select", "--pattern", DIVERGING, "--checkpoint", str(sinusoid_checkpoint), "--storage", storage,
            "--max-degradation", "0.5", "--tasks", "6", "--report-tasks", "6", "--timed-tasks", "1",
            "--timed-rounds", "1", "--test-seed", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "not confirmed: the baseline is the answer" in out and "adaptation diverged" in out


def test_a_diverging_baseline_is_one_line_with_exit_1(sinusoid_checkpoint: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--checkpoint", str(sinusoid_checkpoint), "--baseline", DIVERGING, "--tasks", "4",
            "--repeats", "1", "--benchmark", "sinusoid", "--shots", "5", "--queries", "10", "--device", "cpu"]
    assert cli.main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith(f"patternsearch: error: pattern {DIVERGING} diverged"), last


def test_diverging_candidates_print_without_bounds() -> None:
    from patternsearch.search import ConfirmationEvidence, LookSpent, Selection, ValidationEvidence

    candidate = CandidateTest(DIVERGING, None, None, None, level=0.025, diverged=6)
    look = LookSpent(1, 0.025, "look 1 at this test split")
    lines = Selection("full", "full", 0.5, 0.95, confirmed=False, reason="none", validation=ValidationEvidence(),
                      confirmation=ConfirmationEvidence((candidate,), None, 6, None, look)).describe()
    assert f"{DIVERGING}: diverged on 6 of 6 confirmation tasks: not confirmed" in lines
