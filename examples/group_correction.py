"""The new-group correction of validation proposals, simulated with and without group effects.

    python examples/group_correction.py --runs 200 --seed 0

Each run fabricates a validation split like Omniglot's: ``--tasks`` (200)
five-way tasks drawing their classes uniformly from G groups (alphabets) of
``CHARACTERS`` characters x 4 rotations, each pattern's per-task paired
difference to the baseline its group effects' share-weighted mean, plus
character effects (``CHARACTER_SD``) and task noise (``TASK_SD``: 4 points,
what the issue measured on the omniglot benchmark's validation split), with
D = 1 point. The front is ``FRONT``: three fast patterns (head frozen, in
the real studies) and four slower ones. With effects, each fast pattern draws
its group effects with standard deviation ``EFFECT_SD`` (1.5 points, the
size of the frozen-head patterns' Greek/Tagalog split); the slow ones never
have any. ``patternsearch.confirmation.validation_front`` then builds the
front three ways: without groups (no correction), with the rule before
2026-12-08 (``worst_group_gap`` below: the least favourable group's
least-squares coefficient less the mean) and with the shipped one
(``new_group_gap``). Printed per G and effect: the mean gap of the patterns
without a group effect in their standard errors and how often it is not 0;
the same for those with one; the mean speedup of the front's fastest
pattern; and how often that pattern would lose more than D on a new group
(its true mean plus a new group's effect).

``--latin`` reproduces the 2026-12-06 case instead (docs/selection.md,
"Under a new alphabet"): two groups of 24 (Greek) and 17 (Tagalog)
characters, each pattern's group differences and per-task spread those
validation measured, speedups as assumed in ``LATIN``, and the patterns of a
family (head frozen, head adapting) sharing most of their task noise, as
patterns that adapt alike do. ``--level`` runs the shipped rule at another
``GROUP_TEST_LEVEL``; ``--json`` prints the numbers as JSON; ``--runs 10``
is a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

import patternsearch.confirmation._proposals as proposals_module
from patternsearch.confirmation import Proposal, group_differences, validation_front
from patternsearch.uncertainty import TaskDesign, estimate

D = 0.01
TASK_SD, CHARACTER_SD, EFFECT_SD = 0.04, 0.005, 0.015
CHARACTERS, WAYS = 20, 5
GROUP_COUNTS = (1, 2, 5, 10, 20)


@dataclass(frozen=True)
class Pattern:
    """A simulated pattern: its speedup, true mean difference, and whether it may have group effects."""

    name: str
    speedup: float
    mean: float
    grouped: bool


FRONT = (Pattern("fast-1", 16.0, -0.002, True), Pattern("fast-2", 15.0, -0.001, True),
         Pattern("fast-3", 13.0, -0.002, True), Pattern("slow-1", 12.0, -0.004, False),
         Pattern("slow-2", 8.0, -0.003, False), Pattern("slow-3", 4.0, -0.001, False),
         Pattern("slow-4", 2.0, 0.0, False))


@dataclass(frozen=True)
class LatinPattern:
    """A pattern of the 2026-12-06 flags study: its validation differences on Greek and Tagalog, its spread."""

    name: str
    speedup: float
    greek: float
    tagalog: float
    task_sd: float
    head_frozen: bool
    latin: float | None  # what the test split (Latin) said, where measured


# Group differences and per-task spreads as validation measured them; the speedups of the frozen-head
# patterns are assumed (faster than 00011:2, as they were when they topped the fronts before 2026-12-06).
LATIN = (LatinPattern("00010:1", 16.0, 0.0080, -0.0221, 0.035, True, -0.0112),
         LatinPattern("00010:3", 15.5, 0.0092, -0.0130, 0.031, True, -0.0061),
         LatinPattern("00010:4", 15.0, 0.0094, -0.0121, 0.031, True, -0.0053),
         LatinPattern("00011:2", 14.7, -0.0060, -0.0043, 0.018, False, -0.0031),
         LatinPattern("00011:6", 8.0, -0.0024, -0.0019, 0.016, False, 0.0003),
         LatinPattern("00111:10", 3.5, -0.0005, 0.0006, 0.012, False, 0.0013))
LATIN_CHARACTERS = (24, 17)
SHARED_NOISE = 0.9  # correlation of the task noise of patterns of one family


def worst_group_gap(differences: np.ndarray, groups: tuple[tuple[int, ...], ...] | None, standard_error: float,
                    confidence: float) -> float:
    """The rule before 2026-12-08: the least favourable group's coefficient less the mean (0 or negative)."""
    by_group = group_differences(differences, groups)
    return min(0.0, min(by_group.values()) - float(np.mean(differences))) if by_group else 0.0


@contextlib.contextmanager
def gap_rule(rule: Callable[..., float]) -> Iterator[None]:
    """``validation_front`` with another group correction (the shipped one is restored after)."""
    shipped = proposals_module.new_group_gap
    proposals_module.new_group_gap = rule
    try:
        yield
    finally:
        proposals_module.new_group_gap = shipped


RULES: dict[str, Callable[..., float] | None] = {
    "none": None, "old": worst_group_gap, "new": proposals_module.new_group_gap}


def draw_design(rng: np.random.Generator, tasks: int, characters: Sequence[int]) -> TaskDesign:
    """``tasks`` five-way tasks drawing classes uniformly from groups of ``characters`` characters x 4 rotations."""
    group_of = np.repeat(np.arange(len(characters)), characters)
    classes = np.array([rng.choice(group_of.size * 4, WAYS, replace=False) for _ in range(tasks)])
    units = classes // 4
    as_tuples = lambda a: tuple(tuple(int(x) for x in row) for row in a)  # noqa: E731
    return TaskDesign(as_tuples(classes), as_tuples(units), as_tuples(group_of[units]))


@dataclass
class Tally:
    """Sums over runs for one setting."""

    gaps: dict[str, list[float]]  # "<rule>/<effect|plain>" -> gap / se of each pattern and run
    fastest: dict[str, list[float]]  # rule -> the front's fastest speedup per run
    loses: dict[str, list[float]]  # rule -> P(the front's fastest loses more than D on a new group) per run

    @classmethod
    def empty(cls) -> Tally:
        return cls({}, {rule: [] for rule in RULES}, {rule: [] for rule in RULES})


def fronts(proposals: list[Proposal], design: TaskDesign) -> dict[str, list[str]]:
    """Each rule's validation front (pattern names, fastest first)."""
    result = {}
    for rule, gap in RULES.items():
        if gap is None:
            front = validation_front(proposals, TaskDesign(design.classes, design.units), max_degradation=D,
                                     confidence=0.95)
        else:
            with gap_rule(gap):
                front = validation_front(proposals, design, max_degradation=D, confidence=0.95)
        result[rule] = [c.pattern for c in front]
    return result


def record_gaps(tally: Tally, proposals: list[Proposal], design: TaskDesign, grouped: set[str]) -> None:
    """Each rule's gap of each pattern (``grouped``: those with group effects), in its standard errors."""
    for proposal in proposals:
        error = estimate(proposal.val_differences, design).standard_error
        for rule, gap in RULES.items():
            if gap is None:
                continue
            key = f"{rule}/{'effect' if proposal.pattern in grouped else 'plain'}"
            value = gap(proposal.val_differences, design.groups, error, 0.95) / error
            tally.gaps.setdefault(key, []).append(value)


def simulate(groups: int, effect: bool, runs: int, tasks: int, rng: np.random.Generator) -> Tally:
    """``runs`` validations of ``FRONT`` over ``groups`` groups, with or without group effects."""
    tally = Tally.empty()
    by_name = {p.name: p for p in FRONT}
    for _ in range(runs):
        design = draw_design(rng, tasks, [CHARACTERS] * groups)
        group_index = np.array(design.groups)
        unit_index = np.array(design.units)
        proposals, effect_sd = [], {}
        for pattern in FRONT:
            sd = EFFECT_SD if effect and pattern.grouped else 0.0
            effect_sd[pattern.name] = sd
            differences = (pattern.mean + rng.normal(0.0, sd, groups)[group_index].mean(axis=1)
                           + rng.normal(0.0, CHARACTER_SD, groups * CHARACTERS)[unit_index].mean(axis=1)
                           + rng.normal(0.0, TASK_SD, tasks))
            proposals.append(Proposal(pattern.name, pattern.speedup, float(differences.mean()), differences))
        record_gaps(tally, proposals, design, {name for name, sd in effect_sd.items() if sd > 0.0})
        for rule, front in fronts(proposals, design).items():
            top = by_name[front[0]] if front else None
            tally.fastest[rule].append(top.speedup if top else 1.0)
            sd = effect_sd[top.name] if top else 0.0
            tally.loses[rule].append(0.0 if top is None else
                                     float(special.ndtr((-D - top.mean) / sd)) if sd > 0.0 else
                                     float(top.mean < -D))
    return tally


def simulate_latin(runs: int, tasks: int, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """How often each rule's front is topped by a frozen-head pattern, over ``runs`` validations of ``LATIN``."""
    topped = {rule: 0 for rule in RULES}
    fastest = {rule: 0.0 for rule in RULES}
    kept = {rule: {p.name: 0 for p in LATIN} for rule in RULES}
    for _ in range(runs):
        design = draw_design(rng, tasks, LATIN_CHARACTERS)
        greek_share = np.array([sum(g == 0 for g in task) / WAYS for task in design.groups])
        family = {True: rng.normal(0.0, 1.0, tasks), False: rng.normal(0.0, 1.0, tasks)}
        proposals = []
        for p in LATIN:
            noise = (SHARED_NOISE * family[p.head_frozen]
                     + math.sqrt(1.0 - SHARED_NOISE**2) * rng.normal(0.0, 1.0, tasks)) * p.task_sd
            differences = p.greek * greek_share + p.tagalog * (1.0 - greek_share) + noise
            proposals.append(Proposal(p.name, p.speedup, float(differences.mean()), differences))
        by_name = {p.name: p for p in LATIN}
        for rule, front in fronts(proposals, design).items():
            topped[rule] += bool(front) and by_name[front[0]].head_frozen
            fastest[rule] += by_name[front[0]].speedup if front else 1.0
            for name in front:
                kept[rule][name] += 1
    return {rule: {"frozen_head_tops_front": topped[rule] / runs, "fastest_speedup": fastest[rule] / runs,
                   **{f"on_front:{name}": count / runs for name, count in kept[rule].items()}}
            for rule in RULES}


def summary(tally: Tally) -> dict[str, float]:
    """The numbers of one setting."""
    result: dict[str, float] = {}
    for key, values in sorted(tally.gaps.items()):
        result[f"mean_gap_se:{key}"] = float(np.mean(values))
        result[f"moved:{key}"] = float(np.mean(np.asarray(values) < 0.0))
    for rule in RULES:
        result[f"fastest_speedup:{rule}"] = float(np.mean(tally.fastest[rule]))
        result[f"fastest_loses_over_D:{rule}"] = float(np.mean(tally.loses[rule]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="simulated validations per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=200, help="validation tasks")
    parser.add_argument("--groups", default=",".join(map(str, GROUP_COUNTS)), help="group counts, comma-separated")
    parser.add_argument("--latin", action="store_true", help="reproduce the 2026-12-06 case instead")
    parser.add_argument("--level", type=float, default=proposals_module.GROUP_TEST_LEVEL,
                        help="the shipped rule with another GROUP_TEST_LEVEL (how it was chosen)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    proposals_module.GROUP_TEST_LEVEL = args.level
    proposals_module._group_fit.cache_clear()
    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    if args.latin:
        result: dict = simulate_latin(args.runs, args.tasks, rng)
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(f"the 2026-12-06 case, {args.runs} validations of {args.tasks} tasks (seed {args.seed}, level "
              f"{args.level:g}, {time.perf_counter() - began:.0f} s)")
        print("| correction | front topped by a frozen-head pattern | fastest on the front | "
              + " | ".join(f"`{p.name}` on the front" for p in LATIN) + " |")
        print("| --- " * (3 + len(LATIN)) + "|")
        for rule, numbers in result.items():
            print(f"| {rule} | {numbers['frozen_head_tops_front']:.0%} | {numbers['fastest_speedup']:.1f}x | "
                  + " | ".join(f"{numbers[f'on_front:{p.name}']:.0%}" for p in LATIN) + " |")
        return
    result = {}
    for groups in (int(g) for g in args.groups.split(",")):
        for effect in (False, True):
            result[f"G={groups}, {'effects' if effect else 'no effect'}"] = summary(
                simulate(groups, effect, args.runs, args.tasks, rng))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.runs} validations of {args.tasks} five-way tasks per row (seed {args.seed}, level {args.level:g}, "
          f"{time.perf_counter() - began:.0f} s); gaps in standard errors of each pattern's mean, old / new rule")
    print("| groups, effects | gap without effect: mean (moved) | gap with effect: mean (moved) | "
          "front's fastest: none / old / new | it loses > D on a new group: none / old / new |")
    print("| --- | --- | --- | --- | --- |")
    for setting, n in result.items():
        effect = ("-" if "mean_gap_se:new/effect" not in n else
                  f"{n['mean_gap_se:old/effect']:+.2f} ({n['moved:old/effect']:.0%}) / "
                  f"{n['mean_gap_se:new/effect']:+.2f} ({n['moved:new/effect']:.0%})")
        print(f"| {setting} | {n['mean_gap_se:old/plain']:+.2f} ({n['moved:old/plain']:.0%}) / "
              f"{n['mean_gap_se:new/plain']:+.2f} ({n['moved:new/plain']:.0%}) | {effect} | "
              + " / ".join(f"{n[f'fastest_speedup:{r}']:.1f}x" for r in RULES) + " | "
              + " / ".join(f"{n[f'fastest_loses_over_D:{r}']:.0%}" for r in RULES) + " |")


if __name__ == "__main__":
    main()
