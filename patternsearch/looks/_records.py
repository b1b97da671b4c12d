"""The records of the ledger (a look, what the rule made of it, what a confirmation may spend) and the rule itself.

:func:`replay` is the rule of :mod:`patternsearch.looks`: it reads a ledger's
entries in order and says what each spent, refused or repeated.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import numpy as np

from ..errors import RecordError
from ..records import VersionedRecord

DEFAULT_CONFIDENCE = 0.95


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
