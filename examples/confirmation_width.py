"""What a confirmation bound is made of, on select's own confirmation tasks.

    python examples/confirmation_width.py --storage sqlite:///runs/flags.db --study flags \
        --data-root ../shared/data/omniglot --patterns 00010:1 00010:3 00010:4 00010:5 00010:6

For each pattern: its paired difference to the study's baseline on the 600
confirmation tasks ``select`` uses (same seed, same characters), the standard
error and degrees of freedom of the bound ``select`` computes (crossed model:
tasks share characters), the standard error if the tasks were independent,
the one-sided 95% bound, and the bound the same standard error would give
with the normal quantile (a known variance). The gap between the last two
is what estimating the characters' variance from few characters costs; the
gap between the two standard errors is what the characters themselves cost.
``--json`` prints the numbers as JSON.

These are test-split numbers a pattern could be chosen from: the script
records its look in ``--storage``'s ledger and the user's (as ``evaluate
--split test`` does), so a later confirmation on that split is refused
unless ``--accept-test-looks`` (see docs/selection.md, "Looks at the test split").
"""

from __future__ import annotations

import argparse
import json

import optuna
from scipy import stats

from patternsearch.benchmarks import disjoint_task_sets
from patternsearch.checkpoint import file_checksum
from patternsearch.looks import Ledger
from patternsearch.search import (
    CONFIG_ATTR,
    PairedScores,
    StudyConfig,
    baseline_trial,
    completed_trials,
    measured,
    open_storage,
    study_experiment,
)
from patternsearch.uncertainty import TaskDesign, estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="the study's storage URL")
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--patterns", nargs="+", required=True, help="patterns to look at")
    parser.add_argument("--data-root", default=None, help="where the benchmark's data is")
    parser.add_argument("--checkpoint", default=None, help="the study's checkpoint, if not the shipped one")
    parser.add_argument("--tasks", type=int, default=600, help="confirmation tasks (select's --tasks)")
    parser.add_argument("--seed", type=int, default=0, help="select's test seed")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    config = StudyConfig.from_dict(study.user_attrs[CONFIG_ATTR])
    experiment = study_experiment(config, data_root=args.data_root, checkpoint=args.checkpoint, device="cpu")
    tasks, _, _ = disjoint_task_sets(experiment.benchmark, "test", args.tasks, args.tasks, args.seed)
    baseline = measured(baseline_trial(study, completed_trials(study))).pattern
    paired = PairedScores(experiment, experiment, experiment.pattern(baseline), tasks)
    normal = float(stats.norm.ppf(0.95))
    rows = []
    for pattern in args.patterns:
        differences = paired.differences(pattern)
        crossed, independent = estimate(differences, paired.design), estimate(differences, TaskDesign.none())
        rows.append({"pattern": pattern, "difference": crossed.mean, "standard_error": crossed.standard_error,
                     "dof": crossed.dof, "independent_standard_error": independent.standard_error,
                     "lower_bound": crossed.lower_bound(0.95),
                     "known_variance_bound": crossed.mean - normal * crossed.standard_error})
    Ledger(open_storage(args.storage)).record_scoring(  # the numbers are about to be seen
        "examples/confirmation_width.py", experiment.benchmark, [file_checksum(experiment.checkpoint_path)],
        [experiment.pattern(p) for p in args.patterns], experiment.pattern(baseline), tasks, args.seed)
    result = {"baseline": str(baseline), "tasks": args.tasks, "classes": paired.design.distinct_classes(),
              "units": paired.design.distinct_units(), "patterns": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"paired differences to {baseline} on {args.tasks} confirmation tasks ({result['classes']} classes from "
          f"{result['units']} characters), in points:")
    print("pattern     difference     SE    dof  SE (independent tasks)  95% bound  with a known variance")
    for row in rows:
        print(f"{row['pattern']:10}  {100 * row['difference']:+10.2f}  {100 * row['standard_error']:5.3f}  "
              f"{row['dof']:5.1f}  {100 * row['independent_standard_error']:22.3f}  "
              f"{100 * row['lower_bound']:+9.2f}  {100 * row['known_variance_bound']:+21.2f}")


if __name__ == "__main__":
    main()
