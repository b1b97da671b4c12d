"""A confirmation says when its test split was looked at before with the same checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

from patternsearch import confirm_pattern, open_experiment
from patternsearch.checkpoint import file_checksum
from patternsearch.looks import looks_at, record_look

from .conftest import SINUSOID


def test_a_confirmation_names_earlier_looks_at_its_test_split(sinusoid_checkpoint: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    sha = file_checksum(sinusoid_checkpoint)
    options = dict(test_tasks=6, report_tasks=6, timed_tasks=1, timed_rounds=1)
    assert confirm_pattern(experiment, "001:3", 0.5, **options).seen_before == ()
    record_look("0" * 64, "sinusoid", ["010:2"], "evaluate")  # another checkpoint: not this split's concern
    record_look(sha, "omniglot-small", ["010:2"], "evaluate")  # another benchmark
    record_look(sha, "sinusoid", ["001:3", "111:10"], "evaluate")
    assert [look.patterns for look in looks_at({sha}, "sinusoid")] == [("001:3", "111:10")]
    seen = confirm_pattern(experiment, "001:3", 0.5, **options).seen_before
    assert len(seen) == 1 and seen[0].startswith("evaluate of 001:3, 111:10 on ")


def test_a_ledger_cut_short_is_read_up_to_the_damage() -> None:
    record_look("a" * 64, "sinusoid", ["001:1"], "evaluate")
    ledger = Path(os.environ["PATTERNSEARCH_HOME"]) / "test_looks.jsonl"
    ledger.write_text(ledger.read_text() + '{"checkpoint_sha256": "a')
    assert len(looks_at({"a" * 64}, "sinusoid")) == 1
