"""How ``tune`` spends its budget: durations, successive-halving rungs, and which candidates go on.

Numbers only (no model, no storage), so the schedule can be tested and
reasoned about on its own.

Successive halving (Jamieson and Talwalkar 2016), synchronous: every
candidate is specialized for the first rung; the best ``1/reduction`` of
them (at least one) go on to the next, and so on until one is left. Each
rung gets an equal share of the budget, split equally among the candidates
still in it, so the last one standing is specialized longest. The rungs are
planned in meta-updates from each candidate's measured cost per update, so
a resumed or shared run makes the same decisions as a straight one (a
wall-clock deadline would not).

Which candidates go on is decided by the **within-weighted speedup** (not the expected speedup
of a selection that :mod:`patternsearch.confirmation` predicts): speedup
times the probability that the candidate's true loss is within D, from its
validation difference to the baseline and that difference's standard error
(normal approximation). A fast candidate far from D and a slow one that
already passes both lose to a fast one close to passing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special

from ..errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``3m``, ``2h`` or a plain number of seconds.

    Raises:
        UsageError: Not a duration, or not positive.
    """
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"--budget must be a duration such as 90s, 3m or 2h, got {text!r}")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0.0:
        raise UsageError(f"--budget must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h 05m``, ``3m 20s`` or ``42s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def rung_sizes(candidates: int, reduction: int) -> list[int]:
    """Candidates in each rung: ``candidates``, then ``ceil(previous / reduction)`` down to one."""
    if candidates < 1 or reduction < 2:
        raise UsageError(f"need at least one candidate and a reduction of at least 2, got {candidates}, {reduction}")
    sizes = [candidates]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / reduction))
    return sizes


def rung_iterations(budget_s: float, sizes: Sequence[int], rung: int, seconds_per_iteration: float,
                    seconds_per_unit: float = 0.0) -> int:
    """Meta-updates one candidate adds in ``rung``: its equal share of the rung's equal share of the budget.

    ``seconds_per_unit`` (loading, validating) comes off each share first,
    so the budget bounds the wall time of the specialization, not only of its meta-updates.
    """
    share = budget_s / len(sizes) / sizes[rung] - seconds_per_unit
    return max(1, int(share / max(seconds_per_iteration, 1e-9)))


def smallest_budget(sizes: Sequence[int], unit_costs: Sequence[float]) -> float:
    """The least budget whose every rung share pays each candidate's fixed cost and one meta-update.

    ``unit_costs`` are ``seconds_per_unit + seconds_per_iteration`` per
    candidate; the first rung, the largest, decides.
    """
    return len(sizes) * sizes[0] * max(unit_costs) if sizes and unit_costs else 0.0


def within_weighted_speedup(speedup: float, difference: float, standard_error: float, max_degradation: float) -> float:
    """``speedup * P(true difference >= -D)`` under a normal approximation of the validation difference."""
    if not math.isfinite(standard_error) or standard_error <= 0.0:
        return speedup if difference >= -max_degradation else 0.0
    return speedup * float(special.ndtr((difference + max_degradation) / standard_error))


@dataclass(frozen=True)
class RungScore:
    """One candidate's standing after a rung.

    Attributes:
        candidate: Its index in the plan.
        speedup: Its speedup over the baseline.
        score: Its within-weighted speedup (see :func:`within_weighted_speedup`).
    """

    candidate: int
    speedup: float
    score: float


def survivors(standings: Sequence[RungScore], count: int) -> list[int]:
    """The ``count`` candidates that go on: highest within-weighted speedup, then the faster, then the earlier."""
    ranked = sorted(standings, key=lambda s: (-s.score, -s.speedup, s.candidate))
    return [s.candidate for s in ranked[:count]]
