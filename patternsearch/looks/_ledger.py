"""Where the looks are kept: the storage's ledger, the user's own, and :class:`Ledger`, which reads and writes both."""

from __future__ import annotations

import contextlib
import itertools
import operator
import platform
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from filelock import FileLock

from ..benchmarks import Benchmark, cache_home
from ..errors import RecordError, StorageError, UsageError
from ._records import Entry, Look, Spending, Unreadable, look_identity, replay

LEDGER_STUDY = "patternsearch-test-looks"
USER_LEDGER = "test-looks.db"
_LOOK_ATTR = "look"
_OLD_KEY_PREFIX = "look:"  # record version 1: one study attribute per look


class _Book:
    """The looks kept in one storage: one Optuna study, one trial per look."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = storage
        self._id: int | None = None

    def _existing_id(self) -> int | None:
        if self._id is None:
            try:
                self._id = self.storage.get_study_id_from_name(LEDGER_STUDY)
            except KeyError:
                return None
        return self._id

    def _made_id(self) -> int:
        found = self._existing_id()
        if found is not None:
            return found
        try:
            self._id = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], LEDGER_STUDY)
        except optuna.exceptions.DuplicatedStudyError:  # another worker made it first
            self._id = self.storage.get_study_id_from_name(LEDGER_STUDY)
        return self._id

    def entries(self) -> list[tuple[int, Look | Unreadable]]:
        """Every entry with its order, in order; first-version entries (study attributes) first."""
        study_id = self._existing_id()
        if study_id is None:
            return []
        old = [(-1, _unreadable(value)) for key, value in self.storage.get_study_user_attrs(study_id).items()
               if key.startswith(_OLD_KEY_PREFIX)]
        trials = self.storage.get_all_trials(study_id, deepcopy=False)
        return [*old, *((t.number, _read(t.user_attrs.get(_LOOK_ATTR))) for t in sorted(trials, key=_by_number))]

    def write(self, look: Look) -> int:
        """Writes a look; returns its order (the storage numbers trials one at a time)."""
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.0,
                                          user_attrs={_LOOK_ATTR: look.to_dict()})
        return self.storage.get_trial_number_from_id(self.storage.create_new_trial(self._made_id(), trial))


_by_number = operator.attrgetter("number")


def _read(value: Any) -> Look | Unreadable:
    """A stored look, or what can be read of it."""
    try:
        if isinstance(value, Mapping):
            return Look.from_dict(value, what="a look", remedy="")
    except (RecordError, TypeError, ValueError):
        pass
    return _unreadable(value)


def _unreadable(value: Any) -> Unreadable:
    named = value.get("benchmark") if isinstance(value, Mapping) else None
    return Unreadable(named if isinstance(named, str) else None)


def user_ledger_url() -> str:
    """The user's own ledger: ``sqlite:///<cache>/test-looks.db``."""
    return f"sqlite:///{cache_home() / USER_LEDGER}"


def _open_user_ledger() -> optuna.storages.BaseStorage:
    """The user's ledger, opened once per process; a process racing another to make its tables tries again."""
    path = cache_home() / USER_LEDGER
    with _OPENING:
        if path not in _OPENED:
            for attempt in itertools.count():
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        _OPENED[path] = optuna.storages.RDBStorage(
                            user_ledger_url(), engine_kwargs={"connect_args": {"timeout": 60}})
                    break
                except (OSError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError,
                        ValueError) as error:
                    if attempt < 5 and not isinstance(error, OSError):
                        time.sleep(0.2 * (attempt + 1))  # another process is making the tables
                        continue
                    reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or ["?"])[0]
                    raise StorageError(f"cannot open the user's ledger of looks at test splits {path} ({reason}); "
                                       "set PATTERNSEARCH_HOME to a writable folder") from None
    return _OPENED[path]


_OPENING = threading.Lock()
_OPENED: dict[Path, optuna.storages.BaseStorage] = {}


def _url(storage: optuna.storages.BaseStorage) -> str | None:
    backend = getattr(storage, "_backend", storage)
    return str(getattr(backend, "url", "")) or None


class Ledger:
    """The looks at test splits recorded in a storage and in the user's own ledger (see the module doc).

    Args:
        storage: The study storage.
        user: Also keep the looks in the user's ledger (``<cache>/test-looks.db``).
    """

    def __init__(self, storage: optuna.storages.BaseStorage, *, user: bool = True) -> None:
        self._books = [_Book(storage)]
        if user and _url(storage) != user_ledger_url():
            self._books.append(_Book(_open_user_ledger()))

    def entries(self, benchmark: Benchmark | str, split: str | None = None) -> list[Entry]:
        """The looks at a test split in the storage's ledger and what the rule made of them, in order.

        Args:
            benchmark: The benchmark (its test split), or its name with ``split``.
            split: The test split's identity, when ``benchmark`` is a name.
        """
        name, identity = _split(benchmark, split)
        return replay(self._books[0].entries(), identity, name)

    def looks(self, benchmark: Benchmark | str, split: str | None = None) -> list[Look]:
        """The readable looks at a test split in the storage's ledger, in order (arguments: :meth:`entries`)."""
        return [e.look for e in self.entries(benchmark, split) if e.look is not None]

    def every_look(self) -> list[Look]:
        """The readable looks in the storage's ledger at every test split, in order."""
        return [look for _, look in self._books[0].entries() if isinstance(look, Look)]

    def record(self, look: Look) -> None:
        """Records a look that confirms nothing (``evaluate``, ``bench`` on the test split)."""
        stamped = replace(look, confirms=False, when=time.time(), host=platform.node())
        for book in self._books:
            book.write(stamped)

    def record_scoring(self, command: str, benchmark: Benchmark, checkpoints: Sequence[str],
                       patterns: Sequence[object], baseline: object, tasks: Sequence[object], seed: int) -> None:
        """Records that ``command`` scored ``patterns`` on these tasks of ``benchmark``'s test split.

        It informs a choice of pattern unless it scored only ``baseline`` on one checkpoint.
        """
        names, checksums = tuple(str(p) for p in patterns), tuple(sorted(set(checkpoints)))
        informs = len(checksums) > 1 or any(p != baseline for p in patterns)
        identity = look_identity(command=command, patterns=names, checkpoints=checksums, seed=seed)
        self.record(Look(command, benchmark.name, benchmark.split_identity("test"), identity, unit_names(tasks, seed),
                         checksums, names, confirms=False, informs=informs))

    def check(self, benchmark: Benchmark, confidence: float, *, accept: bool) -> None:
        """Refuses, before any scoring, a confirmation at ``benchmark``'s test split that the rule refuses now.

        Raises:
            UsageError: The rule refuses it (see :meth:`spend`).
        """
        split = benchmark.split_identity("test")
        probe = Look("check", benchmark.name, split, "", (), (), (), confirms=True, confidence=confidence,
                     accepted=accept)
        for book in self._books:
            _raise_refused(replay([*book.entries(), (_LAST, probe)], split, benchmark.name)[-1])

    def spend(self, look: Look, confidence: float, *, accept_scored: bool = False) -> Spending:
        """Records a confirmation after its scores' checksum is known and before they decide anything.

        Args:
            look: The confirmation (``split``, ``identity``, ``scores``, units, checkpoints, patterns).
            confidence: The family-wise confidence it promises across every look at the split.
            accept_scored: Confirm even when the rule refuses (earlier looks
                that confirmed nothing, or a promise that can no longer hold):
                recorded and printed as not covered.

        Raises:
            UsageError: The rule refuses it (one line: why, and what was spent by which looks).
        """
        with self._one_at_a_time():
            return self._spend(look, confidence, accept_scored)

    def _one_at_a_time(self) -> contextlib.AbstractContextManager[object]:
        """Confirmations of this machine spend one at a time, so both ledgers order them alike.

        Each ledger replays its own order; two looks of one user racing each
        other could otherwise be ordered one way in the storage and the other
        way in the user's ledger, and be promised a budget one of them has
        already overspent. Looks of other machines are in the storage's
        ledger alone, whose order decides them.
        """
        if len(self._books) == 1:
            return contextlib.nullcontext()
        return FileLock(str(cache_home() / f"{USER_LEDGER}.lock"))

    def _spend(self, look: Look, confidence: float, accept_scored: bool) -> Spending:
        mine = replace(look, confirms=True, confidence=confidence, accepted=accept_scored, when=time.time(),
                       host=platform.node())
        before = [book.entries() for book in self._books]
        mine = replace(mine, repeats=bool(look.scores) and all(
            replay([*entries, (_LAST, replace(mine, repeats=True))], look.split, look.benchmark)[-1].status
            == "repeat" for entries in before))
        for entries in before:  # refused now: nothing is written
            _raise_refused(replay([*entries, (_LAST, mine)], look.split, look.benchmark)[-1])
        outcomes = []
        for book in self._books:
            order = book.write(mine)
            entries = replay(book.entries(), look.split, look.benchmark)  # in the storage's order
            index = next(i for i, e in enumerate(entries) if e.order == order)
            outcomes.append((entries[index], entries[:index]))
        for entry, _ in outcomes:  # a look written first by a concurrent worker
            _raise_refused(entry)
        entry, earlier = min(outcomes, key=lambda o: o[0].level)  # the ledger that spent the most
        return Spending(entry.number, entry.level, min(o[0].budget for o in outcomes),
                        sum(e.spent for e in earlier), tuple(e.describe() for e in earlier),
                        repeat=entry.status == "repeat", covered=all(o[0].covered for o in outcomes),
                        reason="; ".join(dict.fromkeys(o[0].reason for o in outcomes if o[0].reason)))


_LAST = 2**62  # the order of a look not yet written: after every written one


def _raise_refused(entry: Entry) -> None:
    if entry.status == "refused":
        raise UsageError(f"a confirmation at this test split is refused: {entry.reason}. Choose on validation; to "
                         "confirm anyway, recorded as not covered, pass --accept-test-looks")


def _split(benchmark: Benchmark | str, split: str | None) -> tuple[str, str]:
    if isinstance(benchmark, str):
        if split is None:
            raise TypeError("a benchmark's name needs its test split's identity")
        return benchmark, split
    return benchmark.name, benchmark.split_identity("test")


def unit_names(tasks: Sequence[object], seed: int) -> tuple[str, ...]:
    """The test units tasks drew from (``unit:<id>``), or ``seed:<seed>`` for tasks without units."""
    units = {unit for task in tasks for unit in (getattr(task, "units", None) or ())}
    return tuple(f"unit:{u}" for u in sorted(units)) if units else (f"seed:{seed}",)
