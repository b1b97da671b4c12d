"""Looks at test splits are recorded in the storage's ledger and the user's, and each confirmation spends its share."""

from __future__ import annotations

import itertools
import threading
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from patternsearch import confirm_pattern, create_benchmark, evaluate, open_experiment
from patternsearch.errors import UsageError
from patternsearch.looks import LEDGER_STUDY, Ledger, Look, Unreadable, replay
from patternsearch.search import open_storage

from .conftest import SINUSOID

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SPLIT = "sinusoid-test"


def _look(identity: str, split: str = SPLIT, confirms: bool = True, scores: str = "s",
          benchmark: str = "sinusoid") -> Look:
    return Look("select", benchmark, split, identity, ("unit:1", "unit:2"), ("c" * 64,), ("001:3",), confirms,
                scores=scores)


def _ledger() -> Ledger:
    return Ledger(optuna.storages.InMemoryStorage(), user=False)


def test_each_new_confirmation_spends_half_of_what_is_left_and_a_repeat_spends_nothing_new() -> None:
    ledger = _ledger()
    first = ledger.spend(_look("a"), 0.95)
    assert (first.number, first.level, first.repeat, first.earlier) == (1, pytest.approx(0.025), False, ())
    second = ledger.spend(_look("b"), 0.95)
    assert (second.number, second.level) == (2, pytest.approx(0.0125))
    assert len(second.earlier) == 1 and "spent 0.025" in second.earlier[0]
    again = ledger.spend(_look("a"), 0.95)  # the same tasks, candidates, settings and scores: the same decision
    assert (again.number, again.level, again.repeat) == (1, pytest.approx(0.025), True)
    assert ledger.spend(_look("x", split="other"), 0.95).number == 1  # another test split
    assert "look 2 at this test split: it spends 0.0125 of the 0.025 left of the split's budget 0.05" in (
        second.describe(0.95))
    assert sum(e.spent for e in ledger.entries("sinusoid", SPLIT)) < 0.05


def test_a_repeat_is_free_only_when_its_scores_are_the_same() -> None:
    ledger = _ledger()
    ledger.spend(_look("a", scores="cpu"), 0.95)
    other_device = ledger.spend(_look("a", scores="cuda"), 0.95)  # one identity, other scores: a new look
    assert (other_device.repeat, other_device.number, other_device.level) == (False, 2, pytest.approx(0.0125))
    unscored = ledger.spend(_look("a", scores=""), 0.95)  # nothing to compare: never a repeat
    assert (unscored.repeat, unscored.number) == (False, 3)


def test_a_loose_look_then_a_strict_one_is_refused_and_the_reverse_spends_within_the_strict_budget() -> None:
    ledger = _ledger()
    assert ledger.spend(_look("loose"), 0.8).level == pytest.approx(0.1)
    with pytest.raises(UsageError, match=r"spent 0\.1 \(select of 001:3 .*, spent 0\.1\), at least its own "
                                         r"1 - confidence = 0\.05.*--accept-test-looks"):
        ledger.spend(_look("strict"), 0.95)
    accepted = ledger.spend(_look("strict"), 0.95, accept_scored=True)  # recorded and printed as not covered
    assert not accepted.covered and accepted.level == pytest.approx(0.05)
    assert "NOT covered by the guarantee at confidence 0.95" in accepted.describe(0.95)

    ledger = _ledger()
    assert ledger.spend(_look("strict"), 0.95).level == pytest.approx(0.025)
    loose = ledger.spend(_look("loose"), 0.8)  # half of what is left of the 0.05 the first look promised
    assert (loose.level, loose.budget, loose.covered) == (pytest.approx(0.0125), pytest.approx(0.05), True)
    assert "keeps the family-wise error below 0.05" in loose.describe(0.8)


def test_select_at_a_stricter_confidence_after_a_looser_one_is_refused_in_one_line(sinusoid_checkpoint: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    options = dict(test_tasks=6, report_tasks=6, timed_tasks=1, timed_rounds=1)
    assert confirm_pattern(experiment, "001:3", 0.5, confidence=0.8, **options).confirmation.look.level == (
        pytest.approx(0.1))
    with pytest.raises(UsageError, match=r"spent 0\.1 .* at least its own 1 - confidence = 0\.05") as refused:
        confirm_pattern(experiment, "001:3", 0.5, confidence=0.95, test_seed=1, **options)
    assert "\n" not in str(refused.value)


def test_what_any_look_says_of_the_family_wise_error_holds_for_every_order_and_mix_of_confidences() -> None:
    rng = np.random.default_rng(4)
    for confidences in itertools.chain(itertools.permutations((0.8, 0.9, 0.95, 0.99)),
                                       (rng.choice([0.5, 0.8, 0.9, 0.95, 0.99], 12) for _ in range(30))):
        ledger, promised = _ledger(), []
        for index, confidence in enumerate(confidences):
            try:
                spending = ledger.spend(_look(f"look {index}", scores=str(index)), float(confidence),
                                        accept_scored=bool(index % 3 == 2))
            except UsageError:
                continue
            assert spending.level <= 1 - confidence + 1e-12
            promised += [spending.budget] if spending.covered else []
        spent = sum(e.spent for e in ledger.entries("sinusoid", SPLIT))
        assert all(spent < budget for budget in promised), (confidences, spent, promised)


def test_workers_of_one_server_storage_never_overspend_with_mixed_confidences() -> None:
    name = split = f"sinusoid-{uuid.uuid4().hex}"  # this run's own test split in the shared database
    Ledger(open_storage(POSTGRES), user=False).entries(name, split)  # the schema exists, as after any earlier command
    spendings, failures = [], []
    confidences = [0.8, 0.95, 0.9, 0.99, 0.95, 0.95]

    def confirm(index: int) -> None:  # each worker with its own connection, as on its own machine
        # The last two run one confirmation at once (one identity, the same scores): two looks, or one repeated.
        look = _look(f"worker-{min(index, 4)}", split, benchmark=name)
        try:
            spendings.append((confidences[index], Ledger(open_storage(POSTGRES)).spend(look, confidences[index])))
        except UsageError as refused:  # one line, never a traceback
            if "refused" not in str(refused) or "\n" in str(refused):
                failures.append(refused)
        except Exception as error:  # noqa: BLE001  (reported below: a thread's exception would be lost)
            failures.append(error)

    workers = [threading.Thread(target=confirm, args=(i,)) for i in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures
    entries = Ledger(open_storage(POSTGRES), user=False).entries(name, split)  # every reader replays the same
    spent = sum(e.spent for e in entries)  # what the storage's ledger counts: at least what the workers spent
    assert spendings and sum(s.level for _, s in spendings if not s.repeat) <= spent + 1e-12
    assert all(spent < s.budget for _, s in spendings if s.covered), (spendings, entries)  # every promise holds
    assert all(s.level <= 1 - c + 1e-12 for c, s in spendings)
    assert len({e.order for e in entries}) == len(entries) and len(entries) >= len(spendings)


def test_an_entry_that_cannot_be_read_counts_as_a_confirmation_and_never_raises_a_traceback() -> None:
    storage = optuna.storages.InMemoryStorage()
    ledger = Ledger(storage, user=False)
    ledger.spend(_look("a"), 0.95)
    study_id = storage.get_study_id_from_name(LEDGER_STUDY)
    stored = _look("b").to_dict() | {"when": "yesterday"}  # hand-edited
    storage.create_new_trial(study_id, optuna.trial.create_trial(value=0.0, user_attrs={"look": stored}))
    storage.create_new_trial(study_id, optuna.trial.create_trial(value=0.0, user_attrs={"look": "garbage"}))
    entries = ledger.entries("sinusoid", SPLIT)
    assert [e.status for e in entries] == ["new", "unreadable", "unreadable"]
    # Its split is unknown: it counts at every split of the benchmark it names.
    assert ledger.entries("sinusoid", "another split")[0].status == "unreadable"
    assert ledger.spend(_look("c"), 0.95).number == 4


def test_a_look_of_the_first_ledger_version_counts_before_every_other(sinusoid_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    storage = f"sqlite:///{tmp_path / 'looks.db'}"
    study = optuna.create_study(storage=storage, study_name=LEDGER_STUDY)
    study.set_user_attr("look:1.0:x", {"command": "select", "benchmark": "sinusoid", "identity": "x", "units": [],
                                       "checkpoints": [], "patterns": ["001:3"], "confirms": True, "number": 1,
                                       "spent": 0.025, "when": "not a time", "host": "h", "record_version": 1})
    look = confirm_pattern(experiment, "001:3", 0.5, test_tasks=6, report_tasks=6, timed_tasks=1, timed_rounds=1,
                           storage=storage).confirmation.look
    assert (look.number, look.level) == (2, pytest.approx(0.0125))
    assert "an entry this version cannot read, spent 0.025" in look.earlier[0]


def test_a_fresh_storage_on_the_same_machine_still_sees_earlier_looks(sinusoid_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    options = dict(test_tasks=6, report_tasks=6, timed_tasks=1, timed_rounds=1)
    first = confirm_pattern(experiment, "001:3", 0.5, storage=f"sqlite:///{tmp_path / 'a.db'}", **options)
    assert first.confirmation.look.number == 1
    fresh = confirm_pattern(experiment, "001:3", 0.5, test_seed=1, storage=f"sqlite:///{tmp_path / 'b.db'}",
                            **options)
    assert (fresh.confirmation.look.number, fresh.confirmation.look.level) == (2, pytest.approx(0.0125))


def test_a_look_that_scored_only_the_baseline_does_not_block_a_confirmation(sinusoid_checkpoint: Path) -> None:
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    evaluate(experiment, "full", split="test", tasks=3)
    selection = confirm_pattern(experiment, "001:3", 0.5, test_tasks=6, report_tasks=6, timed_tasks=1,
                                timed_rounds=1)
    assert selection.confirmation.look.covered and selection.confirmation.look.number == 1
    assert "confirmed nothing" in selection.confirmation.look.earlier[0]


def _image_folder(root: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for c in range(3):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / f"class{c}" / f"{i}.png")
    return root


def test_a_test_split_is_known_by_its_data_not_by_the_benchmarks_name(tmp_path: Path) -> None:
    def identity(root: Path) -> str:
        return create_benchmark("image-folder", ways=2, shots=1, queries=1, data_root=root).split_identity("test")

    one, other = _image_folder(tmp_path / "one", 0), _image_folder(tmp_path / "other", 1)
    copy = tmp_path / "copy"
    for path in sorted(one.rglob("*.png")):  # a copy (new times, renamed classes) is the same data
        target = copy / path.relative_to(one).parent.with_name("renamed-" + path.parent.name) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    assert identity(one) != identity(other)
    assert identity(copy) == identity(one)
    sinusoid = create_benchmark("sinusoid")
    assert sinusoid.split_identity("test") == create_benchmark("sinusoid", shots=5).split_identity("test")
    assert sinusoid.split_identity("test") != sinusoid.split_identity("val")


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
    assert "a repeat of confirmation 1" in repeat.confirmation.look.note
    second = confirm_pattern(experiment, "001:3", 0.5, test_seed=1, **options)
    look = second.confirmation.look
    assert (look.number, look.level) == (2, pytest.approx(0.0125))
    assert len(look.earlier) == 2 and look.earlier[0].startswith("select --pattern of 001:3 on ")
    assert "look 2 at this test split" in look.note


def test_the_rule_is_a_function_of_the_ordered_looks() -> None:
    looks = [(0, _look("a")), (1, Unreadable()), (2, _look("b", confirms=False)), (3, _look("c", split="other")),
             (4, Unreadable("omniglot"))]
    assert [(e.status, e.spent) for e in replay(looks, SPLIT, "sinusoid")] == [
        ("new", pytest.approx(0.025)), ("unreadable", pytest.approx(0.0125)), ("scored", 0.0)]
