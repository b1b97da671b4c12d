"""``select`` and ``tune``: the fastest pattern confirmed on the test split, with or without specialization."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..confirmation import DEFAULT_CANDIDATES
from ..errors import UsageError
from ..experiment import open_checkpoint
from ..search import REPORT_TIMED_ROUNDS, REPORT_TIMED_TASKS, SPACES, confirm_pattern, select
from ..tuning import DEFAULT_MARGIN, parse_duration, tune
from ._command import Command
from ._options import (
    add_confirmation_options,
    add_experiment_options,
    add_json_option,
    add_storage_options,
    positive_int,
    spec,
)
from ._output import show, warn


def _select_options(parser: argparse.ArgumentParser) -> None:
    add_storage_options(parser)
    add_confirmation_options(parser)
    parser.add_argument("--candidates", type=positive_int, default=None,
                        help=f"most candidates tested on the test split (default {DEFAULT_CANDIDATES})")
    parser.add_argument("--no-confirm", action="store_true", help="skip the test split (validation only)")
    parser.add_argument("--data-root", default=None, help="folder holding the benchmark's archives")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint the study was made with (with --pattern: the one the pattern adapts; "
                             "default: the shipped one)")
    parser.add_argument("--baseline-checkpoint", type=Path, default=None,
                        help="adapt the baseline on this checkpoint on the test tasks, e.g. the parent of a "
                             "specialized --checkpoint")
    parser.add_argument("--pattern", default=None,
                        help="confirm this pattern alone against --baseline, without a study (e.g. after "
                             "'patternsearch specialize')")
    parser.add_argument("--baseline", default=None, help="baseline with --pattern (default full)")
    parser.add_argument("--timed-tasks", type=positive_int, default=REPORT_TIMED_TASKS,
                        help=f"report tasks the reported speedup is timed on (default {REPORT_TIMED_TASKS})")
    parser.add_argument("--timed-rounds", type=positive_int, default=REPORT_TIMED_ROUNDS,
                        help=f"interleaved timing rounds on each of them (default {REPORT_TIMED_ROUNDS})")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_json_option(parser)


def _tune_options(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser)
    add_storage_options(parser)
    add_confirmation_options(parser)
    parser.add_argument("--budget", default="2h",
                        help="specialization time, all candidates together: 90s, 3m, 2h (default 2h)")
    parser.add_argument("--candidates", type=positive_int, default=4, help="most patterns specialized (default 4)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help=f"validation loss beyond D that specialization may close (default {DEFAULT_MARGIN})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the specialized checkpoints (default tuned/<study>)")
    parser.add_argument("--trials", type=positive_int, default=200,
                        help="trials of the pattern study when it is made here (default 200)")
    parser.add_argument("--space", choices=SPACES, default="flags", help="space of a study made here")
    parser.add_argument("--search-lr", action="store_true", help="search per-phase lr scales in a study made here")
    parser.add_argument("--val-tasks", type=positive_int, default=200,
                        help="validation tasks ranking the candidates between rungs (default 200)")
    parser.add_argument("--confirm-candidates", type=positive_int, default=4,
                        help="most (pattern, checkpoint) pairs tested on the test split (default 4)")
    parser.add_argument("--heartbeat-interval", type=positive_int, default=10,
                        help="seconds between heartbeats; a dead worker's unit is retried after 3 intervals")
    add_json_option(parser)


def _select(args: argparse.Namespace) -> int:
    timing = {"timed_tasks": args.timed_tasks, "timed_rounds": args.timed_rounds}
    if args.pattern is None and args.baseline is not None:
        raise UsageError("--baseline applies only with --pattern; a study is confirmed against the baseline it was "
                         "made with")
    if args.pattern is not None:
        ignored = [flag for flag, given in (("--no-confirm", args.no_confirm), ("--study", args.study is not None),
                                            ("--candidates", args.candidates is not None)) if given]
        if ignored:
            raise UsageError(f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply with "
                             "--pattern, which confirms that one pattern on the test split without a study")
        experiment = open_checkpoint(args.checkpoint, data_root=args.data_root, device=args.device)
        warn(experiment.specialization_warning(experiment.pattern(args.pattern), args.baseline_checkpoint))
        result = confirm_pattern(
            experiment, args.pattern, args.max_degradation,
            baseline=args.baseline or "full", baseline_checkpoint=args.baseline_checkpoint, confidence=args.confidence,
            test_tasks=args.tasks, report_tasks=args.report_tasks, test_seed=args.test_seed, storage=args.storage,
            accept_test_looks=args.accept_test_looks, **timing,
        )
    else:
        result = select(
            args.max_degradation, storage=args.storage, study_name=args.study, confirm=not args.no_confirm,
            confidence=args.confidence, max_candidates=args.candidates or DEFAULT_CANDIDATES, test_tasks=args.tasks,
            report_tasks=args.report_tasks, test_seed=args.test_seed, data_root=args.data_root,
            checkpoint=args.checkpoint, baseline_checkpoint=args.baseline_checkpoint, device=args.device,
            accept_test_looks=args.accept_test_looks, **timing,
        )
    warn(None if result.timing is None else result.timing.noise)
    return show(result, args.json)


def _tune(args: argparse.Namespace) -> int:
    result = tune(
        args.max_degradation, spec(args), budget_s=parse_duration(args.budget), storage=args.storage,
        study_name=args.study, trials=args.trials, search_options={"space": args.space, "search_lr": args.search_lr},
        candidates=args.candidates, margin=args.margin, val_tasks=args.val_tasks, confidence=args.confidence,
        max_confirmed=args.confirm_candidates, test_tasks=args.tasks, report_tasks=args.report_tasks,
        test_seed=args.test_seed, out=args.out, heartbeat_interval=args.heartbeat_interval,
        accept_test_looks=args.accept_test_looks,
    )
    warn(None if result.selection.timing is None else result.selection.timing.noise)
    return show(result, args.json)


COMMANDS = (
    Command("select", "pick the fastest pattern confirmed within an accuracy budget on test tasks",
            "Validation proposes candidates (the study's patterns faster than the baseline, their validation "
            "differences corrected for the winner's curse and for how far a new alphabet may lie below them); "
            "each is compared with the baseline on the same test tasks at its own share of the error "
            "rate, a confirmed one passing its share on (a fallback procedure: one failure does not end the "
            "testing). The fastest confirmed pattern is selected, with probability >= --confidence of being truly "
            "within D; its accuracy and speedup are then measured on fresh test tasks that took no part in the "
            "decision.", _select_options, _select, (
                "patternsearch select --max-degradation 0.01 --data-root DATA",
                "patternsearch select --pattern 00010:5 --checkpoint runs/special.pt --baseline-checkpoint "
                "patternsearch/checkpoints/omniglot-small-conv4-5w1s.pt --data-root DATA")),
    Command("tune", "search, specialize and confirm: the fastest trusted adaptation of a checkpoint",
            "From a checkpoint to its fastest adaptation confirmed within --max-degradation of full MAML on it: "
            "reuse (or run) the pattern study, propose the fastest patterns validation finds close enough, "
            "specialize them by successive halving within --budget, and confirm the specialized checkpoints "
            "together with the parent's own candidates on test tasks. Rerunning continues where it stopped; several "
            "workers on one server --storage (and one --out folder) share the work.", _tune_options, _tune, (
                "patternsearch tune --max-degradation 0.01 --budget 2h --data-root DATA     (rerun to resume)",
                "patternsearch tune --study flags --storage sqlite:///runs/flags.db --budget 30m --data-root DATA")),
)
