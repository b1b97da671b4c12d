"""Power and family-wise error of the confirmation procedures on simulated candidate fronts.

    python examples/selection_power.py --runs 1000 --seed 0

Each run fabricates the confirmation part of omniglot-small's test split
(600 5-way tasks from 20 characters x 4 rotations, 15 queries per way),
per-query Bernoulli accuracies with class difficulty and per-character
pattern effects, and five candidates (fastest first) with known true losses;
every procedure then tests the same estimates (``patternsearch.uncertainty``):
the graphs with Bonferroni tests (``patternsearch.confirmation.graphical_test``)
and the shipped fallback also with parametric tests that use the candidates'
estimated correlation (``closed_test``, as ``select`` and ``tune`` do), with
the previous fixed shares (40% on the anchor) or with the shipped ones, half
of them set by each candidate's validation evidence (``power_graph``: each
run also draws the candidates' validation differences, their true losses
plus noise of ``VALIDATION_ERROR``, independent of the confirmation tasks;
``--validation-bias 0.5`` makes validation overstate every candidate by half
a D, a winner's curse left uncorrected). Printed per front and
procedure: how often a pattern truly within D is selected, the mean speedup
of the selection (1 for the baseline), and how often a candidate at or beyond
D is confirmed (the family-wise error; 5% allowed). ``--characters 17``
simulates the split used before 2026-12-03 (two thirds of the characters),
``--shipped-only`` only the shipped procedure. ``--runs 10`` is a smoke
test; ``--json`` prints the numbers as JSON.

``--long-fronts`` simulates whole rules (``examples/selection_rules.py``:
which patterns of a longer validation front to test, and how) on
``LONG_FRONTS`` (13 patterns, speeds as in the 2026-12-03 flags study),
without and with a new alphabet's shift (``--shift``: extra loss on the
test split that validation does not see, none at 3x, growing with log
speed to its full size at 12x, its size drawn per run). Validation draws
each pattern's difference as above, the front keeps a pattern only when its
validation bound beats every faster one's, and each rule's candidates are
confirmed by ``patternsearch.confirmation.confirm_in_sequence``, what
``select`` runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from scipy import stats
from selection_rules import RULES, Rule
from threadpoolctl import threadpool_limits

from patternsearch.confirmation import (
    ANCHOR_SHARE,
    CandidateTest,
    IntersectionLevels,
    closed_test,
    confirm_in_sequence,
    fallback_graph,
    fixed_sequence_graph,
    graphical_test,
    holm_graph,
    power_graph,
    statistic_correlation,
)
from patternsearch.uncertainty import Estimate, TaskDesign, estimate

D, CONFIDENCE = 0.01, 0.95
UNITS, ROTATIONS, WAYS, QUERIES, TASKS = 20, 4, 5, 15, 600  # three quarters of the 26 test characters
SPEEDUPS = np.array([17.0, 14.0, 12.0, 10.0, 8.0])  # fastest first
VALIDATION_ERROR = 0.004  # standard error of a candidate's validation difference (0.2-0.45 points measured)
# True losses in units of D, fastest first; the last candidate is the anchor (tested first by fixed sequence).
FRONTS = {
    "A flags-like: fast ones lose 0.6-1.2 D": [1.2, 1.0, 0.6, 0.4, 0.4],
    "B fast ones overfit (0.7-1.2 D), slow ones lose nothing": [1.2, 0.9, 0.7, 0.0, 0.0],
    "C phases as tested: the slowest overfit too": [1.2, 0.9, 0.7, 0.0, 0.8],
    "D a bad candidate in the middle": [0.5, 0.5, 1.0, 0.0, 0.0],
    "E all within D": [0.3, 0.2, 0.1, 0.0, 0.0],
}
# Least favourable configurations for the family-wise error; "correlated": every candidate has the same
# per-character effects, so their statistics move together.
NULLS = {
    "all lose exactly D": ([1.0] * 5, False),
    "no-loss slowest, the others exactly D": ([1.0, 1.0, 1.0, 1.0, 0.0], False),
    "all exactly D, correlated": ([1.0] * 5, True),
    "no-loss slowest, the others exactly D, correlated": ([1.0, 1.0, 1.0, 1.0, 0.0], True),
}

# Longer validation fronts (--long-fronts): speedups of the 2026-12-03 flags study's front, fastest first (the last
# is the anchor), and true losses in D.
LONG_SPEEDUPS = np.array([15.7, 13.9, 10.8, 9.5, 8.9, 8.6, 8.5, 7.5, 6.1, 6.0, 3.3, 3.0, 1.85])
LONG_FRONTS = {
    "F flags-like: the fastest loses D, the next ones half of it": [1.0, 0.6, 0.5, 0.45, 0.4, 0.4, 0.3, 0.3, 0.2, 0.1,
                                                                    0.05, 0.0, 0.0],
    "G losses fall steadily with speed": [1.2, 1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],
    "H all within D": [0.3, 0.3, 0.2, 0.2, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    "I only the slow end within D": [1.5, 1.4, 1.3, 1.2, 1.2, 1.1, 1.0, 1.0, 0.8, 0.5, 0.2, 0.0, 0.0],
}
LONG_NULL = ("every pattern but the anchor loses exactly D", [1.0] * 12 + [0.0])
# A new alphabet's shift (--long-fronts): extra loss on the test split, growing with speed (log scale) from none at
# SHIFT_FROM to its full size from SHIFT_FULL on; SHIFT is its mean size there, in D.
SHIFT_FROM, SHIFT_FULL, SHIFT = 3.0, 12.0, 0.65


Procedure = Callable[[list[Estimate], "np.ndarray | None", np.ndarray], np.ndarray]
"""Which candidates a procedure confirms, given their estimates, estimated correlation and validation differences."""
PREVIOUS = f"{fallback_graph(5).name}, parametric"
SHIPPED = "fallback, half the weights by validation power, parametric"


def procedures() -> dict[str, Procedure]:
    """The fixed sequence, the graphs with Bonferroni tests, the previous and the shipped parametric fallbacks."""
    graphs = [fixed_sequence_graph(5), fallback_graph(5)]
    graphs += [fallback_graph(5, share) for share in (0.4, 0.6, 0.8) if share != ANCHOR_SHARE]
    alpha = 1.0 - CONFIDENCE
    found: dict[str, Procedure] = {
        graph.name: lambda estimates, _, __, graph=graph: graphical_test(estimates, graph, max_degradation=D,
                                                                     alpha=alpha)[0]
        for graph in [*graphs, holm_graph(5)]}
    found[PREVIOUS] = lambda estimates, correlation, _: closed_test(
        estimates, IntersectionLevels(fallback_graph(5), alpha, correlation), max_degradation=D)[0]
    found[SHIPPED] = lambda estimates, correlation, seen: closed_test(
        estimates, IntersectionLevels(power_graph(validated(seen), max_degradation=D, confidence=CONFIDENCE),
                                      alpha, correlation), max_degradation=D)[0]
    return found


def validated(seen: np.ndarray) -> list[CandidateTest]:
    """The candidates as validation saw them: differences ``seen``, standard error ``VALIDATION_ERROR``."""
    quantile = float(stats.norm.ppf(CONFIDENCE))
    return [CandidateTest(str(i), None, float(x), float(SPEEDUPS[i]), val_corrected=float(x),
                          val_lower_bound=float(x) - quantile * VALIDATION_ERROR, val_standard_error=VALIDATION_ERROR)
            for i, x in enumerate(seen)]


def fabricate(rng: np.random.Generator, losses: np.ndarray, correlated: bool,
              characters: int = UNITS) -> tuple[TaskDesign, np.ndarray]:
    """One confirmation split on ``characters`` characters: its design and each candidate's per-task differences."""
    classes = np.argsort(rng.random((TASKS, characters * ROTATIONS)), axis=1)[:, :WAYS]
    units = classes // ROTATIONS
    design = TaskDesign(tuple(map(tuple, classes.tolist())), tuple(map(tuple, units.tolist())))
    difficulty = np.clip(rng.normal(0.955, 0.03, characters * ROTATIONS), 0.5, 1.0)
    effects = rng.normal(0.0, 0.01, (1 if correlated else len(losses), characters)) * np.ones((len(losses), 1))
    shifts = np.concatenate([[0.0], -losses])[:, None, None] + np.concatenate([np.zeros((1, characters)), effects])[
        :, units]
    accuracy = rng.binomial(QUERIES, np.clip(difficulty[classes][None] + shifts, 0.0, 1.0)).sum(-1) / (
        QUERIES * WAYS)
    return design, accuracy[1:] - accuracy[0]


def simulate(losses: list[float], correlated: bool, runs: int, rng: np.random.Generator,
             tested: dict[str, Procedure], validation_bias: float = 0.0,
             characters: int = UNITS) -> dict[str, dict[str, float]]:
    """Per procedure: share of runs selecting a pattern within D, mean selected speedup, family-wise error."""
    true = np.asarray(losses) * D
    within, speed, errors = ({name: 0.0 for name in tested} for _ in range(3))
    for _ in range(runs):
        design, differences = fabricate(rng, true, correlated, characters)
        estimates = [estimate(d, design) for d in differences]
        correlation = statistic_correlation(differences, estimates, design)
        seen = -true + validation_bias * D + VALIDATION_ERROR * rng.normal(size=true.size)
        for name, procedure in tested.items():
            confirmed = procedure(estimates, correlation, seen)
            first = int(np.argmax(confirmed))
            within[name] += bool(confirmed.any() and true[first] < D - 1e-12)
            speed[name] += SPEEDUPS[first] if confirmed.any() else 1.0
            errors[name] += bool((confirmed & (true >= D - 1e-12)).any())
    return {name: {"selects_within_d": within[name] / runs, "mean_speedup": speed[name] / runs,
                   "familywise_error": errors[name] / runs} for name in tested}


def shift_profile(speedups: np.ndarray) -> np.ndarray:
    """How much of a new alphabet's shift a pattern takes: none at 3x or slower, all of it from 12x on (log scale)."""
    return np.clip(np.log(np.asarray(speedups) / SHIFT_FROM) / np.log(SHIFT_FULL / SHIFT_FROM), 0.0, 1.0)


def long_front(rng: np.random.Generator, validation_losses: np.ndarray) -> list[CandidateTest]:
    """The front validation sees: each pattern's loss plus noise, kept when more reliable than every faster one."""
    quantile = float(stats.norm.ppf(CONFIDENCE))
    seen = -validation_losses + VALIDATION_ERROR * rng.normal(size=validation_losses.size)
    front: list[CandidateTest] = []
    for i, x in enumerate(seen):
        if i == validation_losses.size - 1 or not front or x > front[-1].val_difference:
            front.append(CandidateTest(str(i), None, float(x), float(LONG_SPEEDUPS[i]), val_corrected=float(x),
                                       val_lower_bound=float(x) - quantile * VALIDATION_ERROR,
                                       val_standard_error=VALIDATION_ERROR))
    return front


def simulate_rules(losses: list[float], runs: int, rng: np.random.Generator, rules: dict[str, Rule],
                   shift: float = 0.0, characters: int = UNITS, null: bool = False) -> dict[str, dict[str, float]]:
    """Per rule: share of runs selecting a pattern truly within D, mean speedup, family-wise error, mean picks.

    Validation sees ``losses`` (in D); a new alphabet adds ``c * shift_profile(speedup)`` to every loss on the
    test split, ``c`` drawn per run uniformly from 0 to twice ``shift`` (in D). With ``null``, ``losses`` are the
    test split's own (the least favourable front) and validation sees them less the shift.
    """
    numbers = {name: {"selects_within_d": 0.0, "mean_speedup": 0.0, "familywise_error": 0.0, "picks": 0.0}
               for name in rules}
    profile = shift_profile(LONG_SPEEDUPS)
    for _ in range(runs):
        moved = rng.uniform(0.0, 2.0 * shift) * profile
        given = np.asarray(losses, dtype=np.float64)
        validation, test = (given - moved, given) if null else (given, given + moved)
        true = test * D
        design, differences = fabricate(rng, true, False, characters)
        front = long_front(rng, validation * D)
        for name, rule in rules.items():
            picks, graph = rule(front, D, CONFIDENCE)
            decision = confirm_in_sequence(picks, lambda c, scored=differences: scored[int(c.pattern)], design,
                                           max_degradation=D, confidence=CONFIDENCE, graph=graph)
            row = numbers[name]
            chosen = None if decision.selected is None else int(decision.selected.pattern)
            row["selects_within_d"] += (chosen is not None and true[chosen] < D - 1e-12) / runs
            row["mean_speedup"] += (1.0 if chosen is None else LONG_SPEEDUPS[chosen]) / runs
            row["familywise_error"] += any(c.confirmed and true[int(c.pattern)] >= D - 1e-12
                                           for c in decision.candidates) / runs
            row["picks"] += len(picks) / runs
    return numbers


def long_fronts(runs: int, rng: np.random.Generator, characters: int, shift: float, as_json: bool) -> None:
    """Prints (or dumps as JSON) how each rule does on ``LONG_FRONTS`` and on ``LONG_NULL``, without and with shift."""
    start = time.perf_counter()
    shifts = [0.0, shift] if shift > 0 else [0.0]
    result: dict[str, object] = {"runs": runs, "characters": characters, "max_degradation": D,
                                 "confidence": CONFIDENCE, "speedups": LONG_SPEEDUPS.tolist(), "shifts": {}}
    with threadpool_limits(1):
        for size in shifts:
            rows = {front: simulate_rules(losses, runs, rng, RULES, size, characters)
                    for front, losses in LONG_FRONTS.items()}
            null = simulate_rules(LONG_NULL[1], runs, rng, RULES, size, characters, null=True)
            result["shifts"][str(size)] = {  # type: ignore[index]
                "fronts": {front: {"losses_in_d": LONG_FRONTS[front], **rows[front]} for front in LONG_FRONTS},
                "least_favourable": {"losses_in_d": LONG_NULL[1], **null}}
    result["seconds"] = round(time.perf_counter() - start, 1)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{runs} runs per front, {characters} confirmation characters, D = {D:g}, confidence {CONFIDENCE:.0%}; "
          f"front speedups {', '.join(f'{s:g}x' for s in LONG_SPEEDUPS)}")
    width = max(len(name) for name in RULES)
    for size, table in result["shifts"].items():  # type: ignore[union-attr]
        print(f"\n=== shift of a new alphabet: {float(size):g} D on average at {SHIFT_FULL:g}x and faster "
              f"(none at {SHIFT_FROM:g}x), drawn per run from 0 to {2 * float(size):g} D")
        for front, numbers in [*table["fronts"].items(), (f"least favourable: {LONG_NULL[0]}",
                                                         table["least_favourable"])]:
            print(f"\n{front}")
            print(f"  {'rule':{width}}  selects within D  mean speedup  family-wise error  tested")
            for name in RULES:
                row = numbers[name]
                print(f"  {name:{width}}  {row['selects_within_d']:16.3f}  {row['mean_speedup']:11.2f}x  "
                      f"{row['familywise_error']:17.3f}  {row['picks']:6.2f}")
    print(f"\n({result['seconds']} s; Monte Carlo s.e. of an error rate near 0.05: {np.sqrt(0.05 * 0.95 / runs):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated confirmations per front")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-bias", type=float, default=0.0,
                        help="how much validation overstates every candidate, in D (default 0)")
    parser.add_argument("--characters", type=int, default=UNITS,
                        help=f"confirmation characters (default {UNITS}: three quarters of the 26 test characters)")
    parser.add_argument("--shipped-only", action="store_true", help="simulate only the shipped procedure")
    parser.add_argument("--long-fronts", action="store_true",
                        help="compare the ways of picking candidates from a longer validation front")
    parser.add_argument("--shift", type=float, default=SHIFT,
                        help=f"with --long-fronts: a new alphabet's mean extra loss at {SHIFT_FULL:g}x, in D "
                             f"(default {SHIFT}; 0: none)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    runs = args.runs
    if args.long_fronts:
        long_fronts(runs, np.random.default_rng(args.seed), args.characters, args.shift, args.json)
        return
    tested = procedures()
    if args.shipped_only:
        tested = {SHIPPED: tested[SHIPPED]}
    rng, start = np.random.default_rng(args.seed), time.perf_counter()
    with threadpool_limits(1):  # small matrices: BLAS threads only contend
        power = {front: simulate(losses, False, runs, rng, tested, args.validation_bias, args.characters)
                 for front, losses in FRONTS.items()}
        error = {name: simulate(losses, correlated, runs, rng, tested, args.validation_bias, args.characters)
                 for name, (losses, correlated) in NULLS.items()}
    result = {"runs": runs, "seed": args.seed, "validation_bias": args.validation_bias,
              "characters": args.characters, "max_degradation": D,
              "confidence": CONFIDENCE, "speedups": SPEEDUPS.tolist(), "procedures": list(tested), "shipped": SHIPPED,
              "fronts": {front: {"losses_in_d": FRONTS[front], **power[front]} for front in FRONTS},
              "least_favourable": {name: {"losses_in_d": NULLS[name][0], "correlated": NULLS[name][1], **error[name]}
                                   for name in NULLS},
              "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{runs} runs per front, seed {args.seed}, {args.characters} confirmation characters, "
          f"validation bias {args.validation_bias:g} D, D = {D:g}, "
          f"confidence {CONFIDENCE:.0%}; candidates' speedups {', '.join(f'{s:g}x' for s in SPEEDUPS)} "
          f"(fastest first); shipped: {result['shipped']}")
    width = max(len(name) for name in tested)
    for front, numbers in power.items():
        print(f"\n{front}: true losses {FRONTS[front]} D")
        print(f"  {'procedure':{width}}  selects within D  mean speedup  family-wise error")
        for name, row in numbers.items():
            print(f"  {name:{width}}  {row['selects_within_d']:16.3f}  {row['mean_speedup']:11.2f}x  "
                  f"{row['familywise_error']:17.3f}")
    print("\nFamily-wise error in least favourable configurations (allowed 0.050; Monte Carlo s.e. "
          f"{np.sqrt(0.05 * 0.95 / runs):.3f}):")
    for name, numbers in error.items():
        print(f"  {name}: " + ", ".join(f"{proc} {row['familywise_error']:.3f}" for proc, row in numbers.items()))
    print(f"\n({result['seconds']} s)")


if __name__ == "__main__":
    main()
