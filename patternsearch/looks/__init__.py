"""The ledger of looks at test splits, and the error rate each confirmation may spend.

Records and the rule in ``_records``; where they are kept (the storage's ledger, the user's) in ``_ledger``.

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
are ordered by the storage, so they never overspend; the confirmations of one
machine take a lock beside the user's ledger, so both ledgers order them alike.

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

from ._ledger import LEDGER_STUDY, USER_LEDGER, Ledger, unit_names, user_ledger_url
from ._records import (
    DEFAULT_CONFIDENCE,
    Entry,
    Look,
    Spending,
    Unreadable,
    look_identity,
    replay,
    scores_checksum,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "LEDGER_STUDY",
    "USER_LEDGER",
    "Entry",
    "Ledger",
    "Look",
    "Spending",
    "Unreadable",
    "look_identity",
    "replay",
    "scores_checksum",
    "unit_names",
    "user_ledger_url",
]
