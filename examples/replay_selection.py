"""Replays selection rules on real per-task scores: a study's validation front, over several test seeds.

    python examples/replay_selection.py --storage sqlite:///runs/flags.db --study flags \
        --data-root ../shared/data/omniglot --seeds 0-9 --cache runs/replay --time

Step 1 (slow, once per checkpoint): every pattern of the study's whole
validation front (``patternsearch.search.study_front``: what any rule may
propose from, validation only) and the baseline are scored on the
confirmation and the report tasks of each test seed, drawn as ``select``
draws them (``disjoint_task_sets``); the per-task scores go to ``--cache``
(one ``.npz`` per checkpoint, benchmark and task count, written after each
pattern, so an interrupted run continues and a second study of the same
checkpoint reuses the baseline's scores). ``--time`` measures each pattern's
speedup over the baseline once, with ``patternsearch.measurement.bench`` in
one process (interleaved, warm-up, medians; the host is recorded), and
caches it too.

Step 2 (seconds): each rule (``RULES``) picks its candidates from the front
and confirms them on each seed's cached confirmation scores through
``patternsearch.confirmation.confirm_in_sequence``, the function ``select``
and ``tune`` decide with. Printed per rule: the selected pattern per seed,
its speedup (``--time``'s, else the study's validation estimate) and its
paired difference on that seed's report tasks; the mean and the worst
speedup over the seeds.

Replays judge rules; they are not a user's confirmation, but they print
test-split numbers a pattern could be chosen from: the script records a
look per seed in ``--storage``'s ledger and the user's (as ``evaluate
--split test`` does), so a later confirmation on that split is refused
unless ``--accept-test-looks``. A rule chosen by looking at these replays
is tuned to the test alphabet (design rules on simulations and on the
validation split, then check them here once).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from selection_rules import RULES, Rule

from patternsearch.benchmarks import disjoint_task_sets
from patternsearch.checkpoint import file_checksum
from patternsearch.confirmation import CandidateTest, confirm_in_sequence, group_differences
from patternsearch.devices import device_name
from patternsearch.looks import Ledger
from patternsearch.measurement import bench
from patternsearch.search import (
    CONFIG_ATTR,
    PairedScores,
    StudyConfig,
    open_storage,
    resolve_study,
    study_experiment,
    study_front,
)
from patternsearch.search._pareto import baseline_trial, completed_trials, measured
from patternsearch.search._selection import proposals
from patternsearch.uncertainty import TaskDesign

PARTS = ("confirmation", "report")
# Names of omniglot-small's validation groups (alphabets, numbered in name order), for the printout.
VALIDATION_ALPHABETS = {"omniglot-small": ("Greek", "Tagalog")}


class ScoreCache:
    """Per-task scores of patterns on each seed's tasks, kept in one ``.npz`` written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as stored:
                self._data = {key: stored[key] for key in stored.files}

    def get(self, key: str) -> np.ndarray | None:
        return self._data.get(key)

    def put(self, key: str, value: np.ndarray) -> None:
        self._data[key] = np.asarray(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial.npz")
        np.savez(partial, **self._data)
        os.replace(partial, self.path)


class SeedScores:
    """One test seed's tasks, scored on demand: each pattern once per part, through the cache."""

    def __init__(self, experiment, baseline: str, seed: int, tasks: int, cache: ScoreCache) -> None:
        self.seed, self.baseline, self._cache = seed, baseline, cache
        self._experiment, self._count = experiment, tasks
        self._scorers: dict[str, PairedScores] = {}

    @functools.cached_property
    def _tasks(self) -> dict[str, list]:
        """The seed's confirmation and report tasks, drawn when first needed (ten seeds' images take gigabytes)."""
        drawn = disjoint_task_sets(self._experiment.benchmark, "test", self._count, self._count, self.seed)[:2]
        return dict(zip(PARTS, drawn, strict=True))

    @functools.cached_property
    def design(self) -> TaskDesign:
        """The confirmation tasks' design."""
        return TaskDesign.of(self._tasks["confirmation"])

    def scores(self, part: str, pattern: str) -> np.ndarray:
        """Per-task scores of ``pattern`` on this seed's ``part`` tasks (scored once, then cached)."""
        key = f"{self.seed}|{part}|{pattern}"
        found = self._cache.get(key)
        if found is None:
            if part not in self._scorers:
                self._scorers[part] = PairedScores(self._experiment, self._experiment,
                                                   self._experiment.pattern(self.baseline), self._tasks[part])
            print(f"scoring {pattern} on seed {self.seed}'s {part} tasks", file=sys.stderr, flush=True)
            found = self._scorers[part].candidate_scores(pattern)
            self._cache.put(key, found)
        return found

    def release(self) -> None:
        """Drops the scorers (their cached features and trajectories) and the tasks; scores stay in the cache."""
        _ = self.design  # kept: it is all a replay needs of the tasks
        self._scorers.clear()
        self.__dict__.pop("_tasks", None)

    def cached(self, part: str, pattern: str) -> bool:
        """Whether ``pattern`` has been scored on this seed's ``part`` tasks."""
        return self._cache.get(f"{self.seed}|{part}|{pattern}") is not None

    def differences(self, part: str, pattern: str) -> np.ndarray:
        """Paired per-task differences of ``pattern`` to the baseline."""
        return self.scores(part, pattern) - self.scores(part, self.baseline)


def parse_seeds(text: str) -> list[int]:
    """``0-9`` or ``0,3,5``."""
    if "-" in text:
        first, last = text.split("-", 1)
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--seeds", default="0-9", help="test seeds: 0-9 or 0,3,5 (default 0-9)")
    parser.add_argument("--tasks", type=int, default=600, help="confirmation and report tasks per seed (default 600)")
    parser.add_argument("--max-degradation", type=float, default=0.01)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--cache", default="runs/replay", help="folder of the score cache (default runs/replay)")
    parser.add_argument("--time", action="store_true", help="measure each front pattern's speedup once (bench)")
    parser.add_argument("--timed-tasks", type=int, default=5)
    parser.add_argument("--timed-rounds", type=int, default=10)
    rules = ", ".join(RULES).replace("%", "%%")  # argparse formats help with %
    parser.add_argument("--rules", nargs="*", default=None, help=f"rules to replay (default all: {rules})")
    parser.add_argument("--report", action="store_true",
                        help="also score each selection on the seed's report tasks (its paired difference there)")
    parser.add_argument("--all", action="store_true",
                        help="score every front pattern on every seed (default: only what the rules test)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    rules = {name: RULES[name] for name in (args.rules or RULES)}
    d, confidence = args.max_degradation, args.confidence

    study = resolve_study(args.storage, args.study)
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = study_experiment(config, data_root=args.data_root, checkpoint=args.checkpoint, device="cpu")
    validation = TaskDesign.of(experiment.benchmark.tasks("val", config.tasks, config.task_seed))
    front = study_front(study, validation, max_degradation=d, confidence=confidence)
    baseline = str(measured(baseline_trial(study, completed_trials(study))).pattern)
    patterns = [baseline, *[c.pattern for c in front]]
    checksum = file_checksum(experiment.checkpoint_path)
    cache = ScoreCache(Path(args.cache) / f"{experiment.benchmark.name}-{checksum[:16]}-{args.tasks}.npz")

    started = time.perf_counter()
    per_seed = {seed: SeedScores(experiment, baseline, seed, args.tasks, cache) for seed in seeds}
    tested = patterns if args.all else [baseline, *{c.pattern: None for name, rule in rules.items()
                                                    for c in rule(list(front), d, confidence)[0]}]
    for seed_scores in per_seed.values():  # one seed at a time: a scorer's caches take gigabytes
        for pattern in tested:
            seed_scores.scores("confirmation", pattern)
        seed_scores.release()
    speedups = {c.pattern: float(c.val_speedup or 1.0) for c in front}
    timing_source = "the study's validation estimates"
    if args.time:
        speedups, timing_source = measured_speedups(experiment, patterns[1:], cache, args.timed_tasks,
                                                    args.timed_rounds)

    ledger = Ledger(open_storage(args.storage))
    for seed in seeds:  # the numbers are about to be seen
        ledger.record_scoring("examples/replay_selection.py", experiment.benchmark, [checksum],
                              [experiment.pattern(p) for p in tested], experiment.pattern(baseline), (), seed)
    result = replay(front, per_seed, rules, speedups, d, confidence, args.report)
    result["alphabet_differences"] = alphabet_differences(study, validation, experiment.benchmark.name)
    result |= {"study": study.study_name, "baseline": baseline, "front": [c.pattern for c in front],
               "speedups": speedups, "speedup_source": timing_source, "seeds": seeds, "tasks": args.tasks,
               "max_degradation": d, "confidence": confidence,
               "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


def measured_speedups(experiment, patterns: Sequence[str], cache: ScoreCache, tasks: int,
                      rounds: int) -> tuple[dict[str, float], str]:
    """Each pattern's speedup over full MAML, from one ``bench`` call (cached by pattern set)."""
    key = "speedups|" + "|".join(sorted(patterns))
    found = cache.get(key)
    if found is None:
        timed_on = experiment.benchmark.tasks("test", tasks, 0)
        rows = bench(experiment, [experiment.pattern(p) for p in patterns], timed_on, repeats=rounds)
        by_pattern = {row.name: row.speedup for row in rows}
        found = np.array([by_pattern[str(experiment.pattern(p))] for p in patterns])
        cache.put(key, found)
        cache.put(key + "|host", np.array([f"{device_name(experiment.device)}, {time.ctime()}"]))
    host = str(cache.get(key + "|host")[0])
    return dict(zip(patterns, map(float, found), strict=True)), f"bench, {tasks} tasks x {rounds} rounds ({host})"


def alphabet_differences(study, validation: TaskDesign, benchmark: str) -> dict[str, dict[str, float]]:
    """Each proposal's paired validation difference per validation group (alphabet), named where known.

    ``patternsearch.confirmation.group_differences``, the fit that judges proposals on their worst group.
    """
    names = VALIDATION_ALPHABETS.get(benchmark, ())
    offered, _ = proposals(study)
    return {proposal.pattern: {(names[g] if g < len(names) else f"group {g}"): value for g, value in
                               group_differences(proposal.val_differences, validation.groups).items()}
            for proposal in offered}


def replay(front: list[CandidateTest], per_seed: dict[int, SeedScores], rules: dict[str, Rule],
           speedups: dict[str, float], d: float, confidence: float, report: bool) -> dict[str, object]:
    """Each rule on each seed: its candidates, the selected pattern, its speedup and report difference."""
    rows: dict[str, dict[str, object]] = {}
    for name, rule in rules.items():
        picks, graph = rule(list(front), d, confidence)
        selections = []
        for seed, seed_scores in per_seed.items():
            decision = confirm_in_sequence(
                picks, lambda c, s=seed_scores: s.differences("confirmation", c.pattern), seed_scores.design,
                max_degradation=d, confidence=confidence, graph=graph)
            chosen = seed_scores.baseline if decision.selected is None else decision.selected.pattern
            selections.append({
                "seed": seed, "pattern": chosen, "speedup": 1.0 if decision.selected is None else speedups[chosen],
                "report_difference": float(seed_scores.differences("report", chosen).mean()) if report else None,
                "bounds": {c.pattern: c.lower_bound for c in decision.candidates}})
            seed_scores.release()
        chosen_speedups = np.array([s["speedup"] for s in selections])
        rows[name] = {"candidates": [c.pattern for c in picks], "selections": selections,
                      "mean_speedup": float(chosen_speedups.mean()), "worst_speedup": float(chosen_speedups.min())}
    return {"rules": rows, "validation_differences": {c.pattern: c.val_difference for c in front},
            "mean_confirmation_differences": {  # over the seeds, where the rules scored the pattern
                c.pattern: float(np.mean([s.differences("confirmation", c.pattern).mean() for s in per_seed.values()]))
                for c in front if all(s.cached("confirmation", c.pattern) for s in per_seed.values())}}


def print_table(result: dict) -> None:
    print(f"study {result['study']}: baseline {result['baseline']}, D = {result['max_degradation']:g}, "
          f"confidence {result['confidence']:.0%}, seeds {result['seeds'][0]}-{result['seeds'][-1]}, "
          f"{result['tasks']} confirmation + {result['tasks']} report tasks per seed; speedups: "
          f"{result['speedup_source']}")
    by_alphabet = result["alphabet_differences"]
    names = list(next(iter(by_alphabet.values()), {}))
    print("\nfront (fastest first): speedup; paired difference in points on validation"
          + "".join(f", {name}" for name in names) + ", the test seeds' confirmation tasks (mean)")
    for pattern in result["front"]:
        per_alphabet = "".join(f" {100 * by_alphabet.get(pattern, {}).get(name, np.nan):+6.2f}" for name in names)
        test = result["mean_confirmation_differences"].get(pattern, np.nan)
        print(f"  {pattern:24} {result['speedups'][pattern]:6.2f}x "
              f"{100 * result['validation_differences'][pattern]:+6.2f}{per_alphabet} {100 * test:+6.2f}")
    for name, row in result["rules"].items():
        print(f"\n{name}: candidates {', '.join(row['candidates'])}")
        for s in row["selections"]:
            reported = "" if s["report_difference"] is None else f"  report {100 * s['report_difference']:+.2f}"
            print(f"  seed {s['seed']}: {s['pattern']:24} {s['speedup']:6.2f}x{reported}")
        print(f"  mean {row['mean_speedup']:.2f}x, worst {row['worst_speedup']:.2f}x")


if __name__ == "__main__":
    main()
