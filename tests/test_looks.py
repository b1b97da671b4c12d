"""Looks at test splits are recorded in the study storage, and each confirmation spends its share of the error rate."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import optuna
import pytest

from patternsearch import confirm_pattern, open_experiment
from patternsearch.errors import UsageError
from patternsearch.looks import Ledger, Look
from patternsearch.search import open_storage

from .conftest import SINUSOID

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _look(identity: str, benchmark: str = "sinusoid", confirms: bool = True) -> Look:
    return Look("select", benchmark, identity, ("unit:1", "unit:2"), ("c" * 64,), ("001:3",), confirms)


def test_each_new_confirmation_spends_half_of_what_is_left_and_a_repeat_spends_nothing_new() -> None:
    ledger = Ledger(optuna.storages.InMemoryStorage())
    first = ledger.spend(_look("a"), 0.95)
    assert (first.number, first.level, first.repeat, first.earlier) == (1, pytest.approx(0.025), False, ())
    second = ledger.spend(_look("b"), 0.95)
    assert (second.number, second.level) == (2, pytest.approx(0.0125))
    assert [e.identity for e in second.earlier] == ["a"]
    again = ledger.spend(_look("a"), 0.95)  # the same tasks, candidates and settings: the same decision
    assert (again.number, again.level, again.repeat) == (1, pytest.approx(0.025), True)
    assert ledger.spend(_look("x", benchmark="omniglot-small"), 0.95).number == 1  # another test split
    assert "look 2 at this test split: it spends 0.0125, 1/4 of 0.05" in second.describe(0.95)
    assert sum(e.spent for e in ledger.looks("sinusoid")) < 0.05


def test_a_split_scored_by_a_look_that_confirmed_nothing_is_refused_unless_accepted() -> None:
    ledger = Ledger(optuna.storages.InMemoryStorage())
    ledger.record(_look("evaluate", confirms=False))
    with pytest.raises(UsageError, match="scored before by a look that confirmed nothing.*--accept-test-looks"):
        ledger.spend(_look("a"), 0.95)
    assert ledger.looks("sinusoid")[-1].confirms is False  # the refusal recorded nothing
    accepted = ledger.spend(_look("a"), 0.95, accept_scored=True)
    assert accepted.covered is False and accepted.number == 1
    assert "NOT covered" in accepted.describe(0.95)


def test_workers_of_one_server_storage_share_the_ledger_and_never_overspend() -> None:
    benchmark = f"sinusoid-{uuid.uuid4().hex}"  # this run's own test split in the shared database
    Ledger(open_storage(POSTGRES)).looks(benchmark)  # the schema and the ledger exist, as after any earlier command
    levels: list[float] = []

    def confirm(index: int) -> None:  # each worker with its own connection, as on its own machine
        levels.append(Ledger(open_storage(POSTGRES)).spend(_look(f"worker-{index}", benchmark), 0.95).level)

    workers = [threading.Thread(target=confirm, args=(i,)) for i in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(levels) == 6 and sum(levels) <= 0.05  # racing looks may share a place, never overspend
    assert len(Ledger(open_storage(POSTGRES)).looks(benchmark)) == 6


def test_a_second_confirmation_says_what_was_looked_at_and_spends_less(sinusoid_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    storage = f"sqlite:///{tmp_path / 'looks.db'}"
    options = dict(test_tasks=6, report_tasks=6, timed_tasks=1, timed_rounds=1, storage=storage)
    first = confirm_pattern(experiment, "001:3", 0.5, **options)
    look = first.confirmation.look
    assert (look.number, look.level, look.earlier) == (1, pytest.approx(0.025), ())
    repeat = confirm_pattern(experiment, "001:3", 0.5, **options)
    assert (repeat.confirmation.look.number, repeat.confirmed, repeat.confirmation.lower_bound) == (
        1, first.confirmed, first.confirmation.lower_bound)
    second = confirm_pattern(experiment, "001:3", 0.5, test_seed=1, **options)
    look = second.confirmation.look
    assert (look.number, look.level) == (2, pytest.approx(0.0125))
    assert len(look.earlier) == 1 and look.earlier[0].startswith("select --pattern of 001:3 on ")
    assert "look 2 at this test split" in look.note
