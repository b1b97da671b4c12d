"""The ledger of looks at test splits, and the error rate each confirmation may spend.

A confirmation's guarantee holds for one look at the test split. A user who
reruns ``select`` with other seeds (the same test characters, reshuffled),
or confirms after ``tune``, and keeps the fastest confirmed answer, has
looked several times; each look's chance of a false confirmation adds up.
So every command that scores a test split records its look, twice: in the
storage's ledger (one Optuna study, ``patternsearch-test-looks``, one trial
per look), which every worker and machine of the storage shares, and in the
user's own ledger (``<cache>/test-looks.db``, the same kind of storage),
which every storage used on this machine shares.

**A split is its data.** Looks are kept by the test split's identity
(:meth:`patternsearch.benchmarks.Benchmark.split_identity`: checksums of
the data it reads and of the split's definition), not by the benchmark's
name: two data sets read through ``image-folder`` are two splits, and a copy
of a data set is the same split.

**The rule.** Each ledger orders its looks by the number the storage gives
each trial when it is written (a storage hands them out one at a time), and
replays them in that order; every reader replays the same looks the same
way. At each split it keeps what was spent, ``S``, and the split's budget
``B``, the smallest ``1 - confidence`` any covered confirmation promised
there (none before the first). A confirmation at ``confidence`` promises
that every look at the split together keeps the family-wise error at
``1 - confidence``:

- when ``S < 1 - confidence``, its promise can hold: ``B`` becomes
  ``min(B, 1 - confidence)`` and it spends half of what is left,
  ``(B - S) / 2`` (so never more than its own ``1 - confidence``);
- otherwise it is refused in one line (saying what was spent, by which
  looks) unless the caller accepts earlier looks explicitly; it then spends
  ``min(1 - confidence, (B - S) / 2)``, leaves ``B`` as it is, and is
  recorded and printed as not covered.

So ``S < B`` always, and ``B`` never grows: what any covered look printed
about the family-wise error stays true, for every order and mix of
confidences. A look spends what is left in the ledger that has spent the
most (the smaller of the two levels), and each ledger counts it at its own
level (at least what it spent): both stay upper bounds. Concurrent workers
are ordered by the storage, so they never overspend.

- **A repeat** spends nothing only when it provably repeats: the same
  identity (tasks, candidates, checkpoints, settings) and the same scores
  (a checksum of every candidate's paired differences, taken before the
  level is chosen), found in both ledgers as an earlier covered
  confirmation; it then decides at that one's level, so it decides the
  same. Other scores (another device or library) make it a new look.
- **A look that confirms nothing** (``evaluate --split test``, ``bench
  --split test``) spends nothing, but when a pattern could be chosen from
  its numbers (it scored more than the baseline on one checkpoint), a later
  confirmation at the split is refused unless the caller accepts it
  explicitly, and is then recorded as not covered.
- **An entry that cannot be read** (another record version, a hand-edited
  attribute) is never skipped: it counts, at every split of its ledger, as
  a confirmation at the default confidence 0.95 that was accepted however
  the split stood (an entry of the first ledger version, kept as a study
  attribute, counts before every trial).

Every confirmation at the split counts, whatever its checkpoint or units
(a new seed reshuffles the same units; even disjoint data does not make
"keep the fastest of several runs" safe).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import operator
import platform
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
import sqlalchemy.exc

from .benchmarks import Benchmark, cache_home
from .errors import RecordError, StorageError, UsageError
from .records import VersionedRecord

LEDGER_STUDY = "patternsearch-test-looks"
USER_LEDGER = "test-looks.db"
DEFAULT_CONFIDENCE = 0.95
_LOOK_ATTR = "look"
_OLD_KEY_PREFIX = "look:"  # record version 1: one study attribute per look


def look_identity(**decides: object) -> str:
    """A checksum of everything that decides a confirmation's result (JSON-able values)."""
    return hashlib.sha256(json.dumps(decides, sort_keys=True, default=str).encode()).hexdigest()


def scores_checksum(differences: Sequence[np.ndarray]) -> str:
    """A checksum of every candidate's paired differences, in order: equal only for the same scores."""
    digest = hashlib.sha256()
    for values in differences:
        array = np.ascontiguousarray(values, dtype=np.float64)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Look(VersionedRecord):
    """One look at a test split.

    Attributes:
        command: What looked (``select``, ``tune``, ``evaluate``, ...).
        benchmark: The benchmark's name, for people.
        split: The test split's identity (:meth:`~patternsearch.benchmarks.Benchmark.split_identity`).
        identity: Checksum of what decides the look's result.
        units: The test units (characters, or task seeds) its tasks drew from.
        checkpoints: Checksums of the checkpoints scored.
        patterns: The patterns scored.
        confirms: Whether it confirmed patterns (spending part of the error rate).
        informs: For a look that confirms nothing: whether a pattern could be
            chosen from its numbers (False when it scored only the baseline).
        confidence: For a confirmation: the family-wise confidence it promises.
        accepted: For a confirmation: made despite earlier looks (then not covered).
        scores: For a confirmation: :func:`scores_checksum` of what it decides on.
        repeats: For a confirmation: it found an earlier one with the same
            identity and scores in every ledger it was written to.
        when: Seconds since the epoch.
        host: The machine.
    """

    command: str
    benchmark: str
    split: str
    identity: str
    units: tuple[str, ...]
    checkpoints: tuple[str, ...]
    patterns: tuple[str, ...]
    confirms: bool
    informs: bool = True
    confidence: float = DEFAULT_CONFIDENCE
    accepted: bool = False
    scores: str = ""
    repeats: bool = False
    when: float = 0.0
    host: str = ""

    RECORD_VERSION: ClassVar[int] = 2

    def rebuilt(self) -> Look:
        """The look with its lists as tuples again.

        Raises:
            RecordError: A field of the wrong type (a hand-edited record).
        """
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("units", "checkpoints", "patterns"):
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            elif field.name in ("confirms", "informs", "accepted", "repeats"):
                ok = isinstance(value, bool)
            elif field.name in ("confidence", "when"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise RecordError(f"a look's {field.name} is {value!r}")
        if not 0.0 < self.confidence < 1.0:
            raise RecordError(f"a look's confidence is {self.confidence!r}")
        return replace(self, units=tuple(self.units), checkpoints=tuple(self.checkpoints),
                       patterns=tuple(self.patterns))

    def describe(self) -> str:
        """``select of 00011:2, 00111:1 on 2026-12-07 04:50 UTC (host)``."""
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.when))
        patterns = ", ".join(self.patterns[:4]) + (", ..." if len(self.patterns) > 4 else "")
        return f"{self.command} of {patterns} on {stamp} ({self.host})"


@dataclass(frozen=True)
class Entry:
    """A look in a ledger and what the rule made of it.

    Attributes:
        look: The look; None for an entry that cannot be read.
        order: Its place in the ledger (the storage's trial number; -1 for a first-version entry).
        status: ``new`` (a confirmation that spent), ``repeat``, ``refused``,
            ``scored`` (confirmed nothing), ``unreadable``.
        number: For a confirmation that spent: its place among those at the split (1: the first).
        spent: What it spent (0 for a repeat, a refusal, a look that confirmed nothing).
        level: The error rate it decided at (a repeat: the one it repeats).
        budget: The split's budget after it.
        covered: Whether the guarantee covers it.
        reason: Why it was refused or not covered ("" otherwise).
    """

    look: Look | None
    order: int
    status: str
    number: int = 0
    spent: float = 0.0
    level: float = 0.0
    budget: float = 0.0
    covered: bool = True
    reason: str = ""

    def describe(self) -> str:
        """The look and what it spent, in words."""
        what = self.look.describe() if self.look is not None else "an entry this version cannot read"
        if self.status in ("new", "unreadable"):
            return f"{what}, spent {self.spent:.3g}" + ("" if self.covered else ", not covered")
        return f"{what}, " + {"repeat": "a repeat, spent nothing", "refused": "refused, spent nothing",
                              "scored": "confirmed nothing"}[self.status]


@dataclass(frozen=True)
class Spending:
    """What a confirmation spends, and why.

    Attributes:
        number: Its place among the confirmations that spent at the test split (1: the first).
        level: The error rate it decides at.
        budget: The split's budget: every look there together keeps the family-wise error below it.
        spent_before: What the looks before it spent.
        earlier: The looks at the split before it, oldest first (described).
        repeat: Whether it repeats an earlier confirmation (same identity and
            scores): it spends nothing and decides at that one's level.
        covered: False when it was accepted despite earlier looks: not covered by the guarantee.
        reason: Why it is not covered ("" when it is).
    """

    number: int
    level: float
    budget: float
    spent_before: float
    earlier: tuple[str, ...]
    repeat: bool
    covered: bool
    reason: str = ""

    def describe(self, confidence: float) -> str:
        """Which look this is at the test split and what it spends, in words."""
        if self.repeat:
            text = (f"a repeat of confirmation {self.number} at this test split (the same data and scores): it "
                    f"spends nothing and decides at that one's level {self.level:.3g}")
        else:
            left = self.budget - self.spent_before
            text = (f"look {self.number} at this test split: it spends {self.level:.3g} of the {left:.3g} left of "
                    f"the split's budget {self.budget:.3g}, so that every look at this split together keeps the "
                    f"family-wise error below {self.budget:.3g}")
        if not self.covered:
            text += f"; NOT covered by the guarantee at confidence {confidence:g}: {self.reason}"
        return text


@dataclass(frozen=True)
class Unreadable:
    """An entry that cannot be read, and the benchmark it names when that much can be read."""

    benchmark: str | None = None


def replay(entries: Sequence[tuple[int, Look | Unreadable]], split: str, benchmark: str) -> list[Entry]:
    """What the rule makes of a ledger's looks at ``split`` (unreadable ones included), in order.

    Args:
        entries: Every entry of one ledger with its order, in order.
        split: The test split's identity.
        benchmark: Its benchmark's name: an unreadable entry that names
            another benchmark does not count here (one that names none counts).
    """
    out: list[Entry] = []
    budget, spent, number = math.inf, 0.0, 0
    scored: list[Look] = []
    for order, stored in entries:
        if isinstance(stored, Unreadable) and stored.benchmark not in (None, benchmark) or (
                isinstance(stored, Look) and stored.split != split):
            continue
        look = stored if isinstance(stored, Look) else None
        if look is not None and not look.confirms:
            scored += [look] if look.informs else []
            out.append(Entry(look, order, "scored", budget=budget))
            continue
        promise = round(1.0 - (DEFAULT_CONFIDENCE if look is None else look.confidence), 12)  # 1 - 0.9 is 0.1
        accepted = look is None or look.accepted
        if look is not None and look.repeats:
            same = next((e for e in out if e.status == "new" and e.covered and e.look is not None
                         and (e.look.identity, e.look.scores) == (look.identity, look.scores)), None)
            if same is not None:
                out.append(Entry(look, order, "repeat", same.number, 0.0, same.level, budget))
                continue
        reasons = []
        if look is not None and scored:
            reasons.append(f"the split was scored before by a look that confirmed nothing "
                           f"({'; '.join(e.describe() for e in scored[-2:])}); a pattern chosen from those numbers "
                           "is not covered by a confirmation on that split")
        if spent >= promise:
            reasons.append(f"the looks before it spent {spent:.3g} ({_spenders(out)}), at least its own "
                           f"1 - confidence = {promise:.3g}")
        if reasons and not accepted:
            out.append(Entry(look, order, "refused", budget=budget, covered=False, reason="; ".join(reasons)))
            continue
        if not reasons or spent < promise:
            budget = min(budget, promise)
        level = min(promise, (budget - spent) / 2)
        spent, number = spent + level, number + 1
        out.append(Entry(look, order, "new" if look is not None else "unreadable", number, level, level, budget,
                         covered=not reasons, reason="; ".join(reasons)))
    return out


def _spenders(entries: Sequence[Entry]) -> str:
    spenders = [e for e in entries if e.spent > 0]
    return "; ".join(e.describe() for e in spenders[-3:]) + (
        f"; and {len(spenders) - 3} more" if len(spenders) > 3 else "")


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
