"""A ledger of looks at test splits, so that a confirmation can say when its test data was already seen.

``select``'s guarantee holds only if the pattern it confirms was not chosen by
looking at the same test data. ``evaluate --split test`` records each look
here (the checkpoint's checksum, the benchmark, the patterns, when); a
confirmation on that checkpoint's test split reads the ledger and says so.
The ledger is one JSON line per look in ``<cache>/test_looks.jsonl``
(``$PATTERNSEARCH_HOME``); deleting it forgets the looks, nothing else.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .benchmarks import cache_home

LEDGER = "test_looks.jsonl"


@dataclass(frozen=True)
class Look:
    """One look at a test split.

    Attributes:
        checkpoint_sha256: The checkpoint whose patterns were scored.
        benchmark: Its benchmark.
        patterns: The patterns scored.
        command: What looked (e.g. ``evaluate``).
        when: Seconds since the epoch.
    """

    checkpoint_sha256: str
    benchmark: str
    patterns: tuple[str, ...]
    command: str
    when: float

    def describe(self) -> str:
        """``evaluate of 00010:5, 11111:10 on 2026-12-02 04:50 UTC``."""
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.when))
        return f"{self.command} of {', '.join(self.patterns)} on {stamp}"


def _path() -> Path:
    return cache_home() / LEDGER


def record_look(checkpoint_sha256: str, benchmark: str, patterns: list[str], command: str) -> None:
    """Appends a look at ``benchmark``'s test split with a checkpoint to the ledger."""
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    look = Look(checkpoint_sha256, benchmark, tuple(patterns), command, time.time())
    with path.open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(asdict(look)) + "\n")


def looks_at(checkpoint_sha256s: set[str], benchmark: str) -> list[Look]:
    """Recorded looks at ``benchmark``'s test split with any of these checkpoints, oldest first.

    A line that cannot be read (a ledger cut short) is skipped.
    """
    path = _path()
    if not path.is_file():
        return []
    looks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            look = Look(str(data["checkpoint_sha256"]), str(data["benchmark"]), tuple(data["patterns"]),
                        str(data["command"]), float(data["when"]))
        except (ValueError, KeyError, TypeError):
            continue
        if look.checkpoint_sha256 in checkpoint_sha256s and look.benchmark == benchmark:
            looks.append(look)
    return looks
