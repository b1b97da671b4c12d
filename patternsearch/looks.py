"""The ledger of looks at test splits, kept in the study storage, and the error rate each confirmation may spend.

A confirmation's guarantee holds for one look at the test split. A user who
reruns ``select`` with other seeds (the same test characters, reshuffled),
or confirms after ``tune``, and keeps the fastest confirmed answer, has
looked several times; each look's chance of a false confirmation adds up.
So every command that scores a test split records its look here, in the
storage (one Optuna study, ``patternsearch-test-looks``, one user attribute
per look), which every worker and machine of the storage shares:

- a **confirmation** (``select``, ``select --pattern``, ``tune``) spends
  ``(1 - confidence) / 2**k`` when it is the ``k``-th distinct confirmation
  at that benchmark's test split: the shares sum to less than
  ``1 - confidence``, so keeping the best of any number of runs keeps the
  family-wise error (docs/selection.md, "Across runs", simulates it). A
  repeat of the same confirmation (same tasks, candidates, checkpoints and
  settings) is the same look: it spends what the first spent and decides
  the same;
- a look that **confirms nothing** (``evaluate --split test``, ``bench
  --split test``) spends nothing, but a pattern may be chosen from its
  numbers: a later confirmation on that split is refused unless the caller
  accepts it explicitly, and is then recorded as not covered.

Every confirmation at the split counts, whatever its checkpoint or units
(a new seed reshuffles the same units; even disjoint data does not make
"keep the fastest of several runs" safe). Each look is written before its
scores are seen and counted by every look that reads the ledger after it,
so concurrent confirmations get distinct shares or the same decision.
Deleting the ledger study forgets the looks, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import optuna

from .errors import RecordError, UsageError
from .records import VersionedRecord

LEDGER_STUDY = "patternsearch-test-looks"
_KEY_PREFIX = "look:"


def look_share(number: int) -> float:
    """The share of ``1 - confidence`` the ``number``-th confirmation at a test split spends: ``1/2**number``."""
    return 0.5**number


def look_identity(**decides: object) -> str:
    """A checksum of everything that decides a confirmation's result (JSON-able values)."""
    return hashlib.sha256(json.dumps(decides, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Look(VersionedRecord):
    """One look at a benchmark's test split.

    Attributes:
        command: What looked (``select``, ``tune``, ``evaluate``, ...).
        benchmark: The benchmark whose test split was scored.
        identity: Checksum of what decides the look's result; a look with the
            same identity is a repeat of it.
        units: The test units (characters, or task seeds) its tasks drew from.
        checkpoints: Checksums of the checkpoints scored.
        patterns: The patterns scored.
        confirms: Whether it confirmed patterns (spending part of the error rate).
        number: For a confirmation, its place among the distinct ones at the
            split (1: the first); 0 before it is known, and for other looks.
        spent: The error rate it spent (0 for other looks).
        when: Seconds since the epoch.
        host: The machine.
    """

    command: str
    benchmark: str
    identity: str
    units: tuple[str, ...]
    checkpoints: tuple[str, ...]
    patterns: tuple[str, ...]
    confirms: bool
    number: int = 0
    spent: float = 0.0
    when: float = 0.0
    host: str = ""

    RECORD_VERSION: ClassVar[int] = 1

    def rebuilt(self) -> Look:
        """The look with its lists as tuples again."""
        return replace(self, units=tuple(self.units), checkpoints=tuple(self.checkpoints),
                       patterns=tuple(self.patterns))

    def describe(self) -> str:
        """``select of 00011:2, 00111:1 on 2026-12-07 04:50 UTC (spent 0.025)``."""
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.when))
        patterns = ", ".join(self.patterns[:4]) + (", ..." if len(self.patterns) > 4 else "")
        spent = f", spent {self.spent:.3g}" if self.confirms else ", confirmed nothing"
        return f"{self.command} of {patterns} on {stamp} ({self.host}{spent})"


@dataclass(frozen=True)
class Spending:
    """What a confirmation may spend, and why.

    Attributes:
        number: Its place among the distinct confirmations at the test split (1: the first).
        level: The error rate it spends: ``(1 - confidence) * look_share(number)``.
        earlier: The looks at the split before it, oldest first.
        repeat: Whether it repeats an earlier confirmation (same identity): it
            then spends that one's level and decides the same.
        covered: False when the split was scored before by a look that
            confirmed nothing (accepted explicitly): a pattern chosen from those
            numbers is not covered by the guarantee.
    """

    number: int
    level: float
    earlier: tuple[Look, ...]
    repeat: bool
    covered: bool

    def describe(self, confidence: float) -> str:
        """Which look this is at the test split and what it spends, in words."""
        alpha = 1.0 - confidence
        if self.repeat:
            text = (f"a repeat of an earlier confirmation at this test split (look {self.number}): the same data, "
                    f"the same level {self.level:.3g}")
        else:
            text = (f"look {self.number} at this test split: it spends {self.level:.3g}, 1/{2**self.number} of "
                    f"{alpha:.3g}, so that every run at this split together keeps the family-wise error "
                    f"{alpha:.3g}")
        if not self.covered:
            text += "; NOT covered by the guarantee: the split was scored before by a look that confirmed nothing"
        return text


class Ledger:
    """The looks recorded in one storage (see the module doc)."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = storage
        self._id: int | None = None

    def _existing_id(self) -> int | None:
        """The ledger study's id, None while no look was recorded (a read never makes it)."""
        if self._id is None:
            try:
                self._id = self.storage.get_study_id_from_name(LEDGER_STUDY)
            except KeyError:
                return None
        return self._id

    def _made_id(self) -> int:
        """The ledger study's id, made by the first look recorded."""
        found = self._existing_id()
        if found is not None:
            return found
        try:
            self._id = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], LEDGER_STUDY)
        except optuna.exceptions.DuplicatedStudyError:  # another worker made it first
            self._id = self.storage.get_study_id_from_name(LEDGER_STUDY)
        return self._id

    def _entries(self) -> dict[str, Look]:
        """Every readable look by its key (a record of another version is skipped: it cannot be counted right)."""
        study_id = self._existing_id()
        entries: dict[str, Look] = {}
        if study_id is None:
            return entries
        for key, value in self.storage.get_study_user_attrs(study_id).items():
            if not key.startswith(_KEY_PREFIX):
                continue
            try:
                entries[key] = Look.from_dict(value, what="a look", remedy="")
            except RecordError:
                continue
        return entries

    def looks(self, benchmark: str | None = None) -> list[Look]:
        """The looks at ``benchmark``'s test split (None: at every benchmark's), oldest first."""
        return sorted((look for look in self._entries().values() if benchmark in (None, look.benchmark)),
                      key=lambda look: look.when)

    def _write(self, key: str, look: Look) -> None:
        self.storage.set_study_user_attr(self._made_id(), key, look.to_dict())

    def record(self, look: Look) -> None:
        """Records a look that confirms nothing (``evaluate``, ``bench`` on the test split)."""
        self._write(_new_key(), replace(look, confirms=False, number=0, spent=0.0, when=time.time(),
                                        host=platform.node()))

    def record_scoring(self, command: str, benchmark: str, checkpoints: Sequence[str], patterns: Sequence[object],
                       tasks: Sequence[object], seed: int) -> None:
        """Records that ``command`` scored ``patterns`` on these test tasks with these checkpoint checksums."""
        names, checksums = tuple(str(p) for p in patterns), tuple(sorted(set(checkpoints)))
        self.record(Look(command, benchmark, look_identity(command=command, patterns=names, checkpoints=checksums,
                                                           seed=seed),
                         unit_names(tasks, seed), checksums, names, confirms=False))

    def refuse_scored(self, benchmark: str, *, accept_scored: bool) -> list[Look]:
        """The looks at ``benchmark``'s test split that confirmed nothing; refused unless ``accept_scored``.

        Raises:
            UsageError: There are some, and ``accept_scored`` is False.
        """
        return _refused(self.looks(benchmark), benchmark, accept_scored)

    def spend(self, look: Look, confidence: float, *, accept_scored: bool = False) -> Spending:
        """Records a confirmation before it sees its scores, and returns the error rate it may spend.

        Args:
            look: The confirmation (``identity``, units, checkpoints, patterns).
            confidence: The family-wise confidence across every look.
            accept_scored: Confirm even when a look that confirmed nothing
                scored the split before (recorded as not covered).

        Raises:
            UsageError: The split was scored before by a look that confirmed
                nothing, and ``accept_scored`` is False.
        """
        alpha = 1.0 - confidence
        earlier = self.looks(look.benchmark)
        scored = _refused(earlier, look.benchmark, accept_scored)
        same = next((e for e in earlier if e.confirms and e.identity == look.identity and e.number > 0), None)
        if same is not None:
            return Spending(same.number, same.spent, tuple(earlier), repeat=True, covered=not scored)
        key = _new_key()
        mine = replace(look, confirms=True, number=0, spent=0.0, when=time.time(), host=platform.node())
        self._write(key, mine)  # written before it is counted: a look reading after this one counts it
        others = {e.identity for k, e in self._entries().items()
                  if k != key and e.confirms and e.benchmark == look.benchmark and e.identity != look.identity}
        number = len(others) + 1
        level = alpha * look_share(number)
        self._write(key, replace(mine, number=number, spent=level))
        return Spending(number, level, tuple(earlier), repeat=False, covered=not scored)


def _refused(looks: Sequence[Look], benchmark: str, accept_scored: bool) -> list[Look]:
    """Those of ``looks`` that confirmed nothing; refused unless ``accept_scored`` (see :meth:`Ledger.spend`)."""
    scored = [e for e in looks if not e.confirms]
    if scored and not accept_scored:
        raise UsageError(
            f"the test split of {benchmark} was scored before by a look that confirmed nothing "
            f"({'; '.join(e.describe() for e in scored[-2:])}); a pattern chosen from those numbers is not "
            "covered by a confirmation on that split. Choose on validation; to confirm anyway, recorded as "
            "not covered, pass --accept-test-looks")
    return scored


def _new_key() -> str:
    return f"{_KEY_PREFIX}{time.time():.6f}:{uuid.uuid4().hex}"


def unit_names(tasks: Sequence[object], seed: int) -> tuple[str, ...]:
    """The test units tasks drew from (``unit:<id>``), or ``seed:<seed>`` for tasks without units."""
    units = {unit for task in tasks for unit in (getattr(task, "units", None) or ())}
    return tuple(f"unit:{u}" for u in sorted(units)) if units else (f"seed:{seed}",)
