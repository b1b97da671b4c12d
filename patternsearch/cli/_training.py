"""``train``, ``specialize`` and ``import-checkpoint``: making checkpoints."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..experiment import build_benchmark, checkpoint_path
from ..importing import import_checkpoint
from ..training import TrainConfig, specialize, train
from ._command import Command
from ._options import (
    add_data_options,
    add_json_option,
    add_meta_update_options,
    add_progress_options,
    add_seed,
    positive_float,
    positive_int,
    spec,
)
from ._output import show, warn


def _train_options(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser)
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint path (resumed if it exists)")
    parser.add_argument("--iterations", type=positive_int, default=None, help="meta-updates in total")
    add_meta_update_options(parser, "")
    parser.add_argument("--inner-lr", type=positive_float, default=None, help="inner-loop learning rate")
    parser.add_argument("--train-steps", type=positive_int, default=None, help="inner steps in training")
    parser.add_argument("--eval-steps", type=positive_int, default=None, help="inner steps at evaluation ('full')")
    parser.add_argument("--first-order", action="store_true", help="first-order MAML (default: second order)")
    parser.add_argument("--pattern", default=None,
                        help="inner-loop pattern, e.g. 00011:5 (default: full MAML at --train-steps); the outer "
                             "loop still updates every parameter")
    add_seed(parser, "train-seed", 0, "seed of the initial weights and the training episodes")
    add_progress_options(parser)
    add_json_option(parser)


def _specialize_options(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser, queries=False)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to specialize (default: the shipped or cached one of --benchmark, "
                             "--model, --ways, --shots)")
    parser.add_argument("--pattern", required=True, help="inner-loop pattern, e.g. the one select chose")
    parser.add_argument("--iterations", type=positive_int, required=True, help="meta-updates in total")
    parser.add_argument("--out", type=Path, required=True, help="specialized checkpoint (resumed if it exists)")
    add_meta_update_options(parser, " (default: the source's)")
    parser.add_argument("--first-order", action="store_true", default=None,
                        help="first-order MAML (default: as the source was trained)")
    add_seed(parser, "train-seed", 1, "seed of the training episodes")
    add_progress_options(parser)
    add_json_option(parser)


def _import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="SRC", help="file saved with torch.save(model.state_dict())")
    parser.add_argument("--out", type=Path, required=True, metavar="DST", help="checkpoint to write")
    add_data_options(parser)
    parser.add_argument("--inner-lr", type=positive_float, required=True, help="the model's inner learning rate")
    parser.add_argument("--eval-steps", type=positive_int, required=True,
                        help="inner steps of its evaluation protocol (the 'full' pattern)")
    parser.add_argument("--train-steps", type=positive_int, default=None, help="inner steps it was trained with")
    parser.add_argument("--mode", choices=["train", "eval"], default="train",
                        help="module mode to adapt in: train (batch statistics, MAML's default) or eval")
    parser.add_argument("--strip-prefix", default=None, help="remove this prefix from every key that has it")
    parser.add_argument("--check-tasks", type=positive_int, default=50,
                        help="validation tasks for the sanity check (default 50)")
    add_json_option(parser)


@dataclass(frozen=True)
class Trained:
    """What ``train`` or ``specialize`` wrote.

    Attributes:
        checkpoint: The checkpoint written.
        iteration: Its meta-updates in total.
        val_score: Its last validation score (None: never validated).
        pattern: The pattern it was specialized for (``specialize`` only).
        parent: The checkpoint it continued from (``specialize`` only).
    """

    checkpoint: str
    iteration: int
    val_score: float | None
    pattern: str | None = None
    parent: str | None = None

    @classmethod
    def of(cls, checkpoint: Checkpoint, path: Path, parent: Path | None = None) -> Trained:
        """The summary of a checkpoint written at ``path``."""
        score = checkpoint.last_val_score()
        return cls(str(path), int(checkpoint.training.get("iteration", 0)), None if math.isnan(score) else score,
                   None if parent is None else checkpoint.pattern, None if parent is None else str(parent))

    def describe(self) -> str:
        """The line the command prints."""
        score = "nan" if self.val_score is None else f"{self.val_score:.4f}"
        if self.parent is None:
            return f"checkpoint: {self.checkpoint} (iteration {self.iteration}, validation score {score})"
        return (f"specialized checkpoint: {self.checkpoint} (pattern {self.pattern}, parent {self.parent}, iteration "
                f"{self.iteration}, validation score with the pattern {score})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _train(args: argparse.Namespace) -> int:
    experiment = spec(args)
    config = TrainConfig.for_spec(
        experiment, inner_lr=args.inner_lr, train_steps=args.train_steps, eval_steps=args.eval_steps,
        meta_batch=args.meta_batch, meta_lr=args.meta_lr, iterations=args.iterations,
        first_order=args.first_order, seed=args.train_seed, val_every=args.val_every, val_tasks=args.val_tasks,
        checkpoint_every=args.checkpoint_every, pattern=args.pattern,
    )
    benchmark = build_benchmark(experiment)
    args.written = path = checkpoint_path(experiment, benchmark)  # what an error or Ctrl-C says is saved
    return show(Trained.of(train(config, path, benchmark=benchmark), path), args.json)


def _specialize(args: argparse.Namespace) -> int:
    source = args.checkpoint or checkpoint_path(spec(args))
    checkpoint = specialize(  # the parent's own benchmark settings come from its checkpoint
        source, args.pattern, args.iterations, args.out, meta_batch=args.meta_batch, meta_lr=args.meta_lr,
        first_order=args.first_order, seed=args.train_seed, val_every=args.val_every, val_tasks=args.val_tasks,
        checkpoint_every=args.checkpoint_every, data_root=args.data_root, device=args.device,
    )
    return show(Trained.of(checkpoint, args.out, parent=source), args.json)


def _import(args: argparse.Namespace) -> int:
    result = import_checkpoint(
        args.source, args.out, spec(args), inner_lr=args.inner_lr, eval_steps=args.eval_steps,
        train_steps=args.train_steps, mode=args.mode, strip_prefix=args.strip_prefix, check_tasks=args.check_tasks,
    )
    warn(result.warning)
    return show(result, args.json)


COMMANDS = (
    Command("train", "meta-train a model with MAML", "Meta-train a model with MAML.", _train_options, _train, (
        "patternsearch train --benchmark omniglot-small --model conv4 --iterations 3000 --data-root DATA",
        "patternsearch train --benchmark sinusoid --model mlp --shots 5 --iterations 200 --checkpoint runs/sin.pt")),
    Command("specialize", "continue meta-training a checkpoint with a pattern as its inner loop",
            "Continue meta-training an existing checkpoint with pattern P as the inner loop (the outer loop updates "
            "every parameter), so that P loses less against full MAML. The new checkpoint records P and its "
            "parent's checksum; rerunning resumes.", _specialize_options, _specialize,
            ("patternsearch specialize --pattern 00010:5 --iterations 1000 --out runs/special.pt --data-root DATA",)),
    Command("import-checkpoint", "turn a state dict meta-trained elsewhere into a patternsearch checkpoint",
            "Read SRC (a state dict, possibly under 'state_dict'/'model_state_dict'/'model', keys possibly prefixed "
            "by a wrapper such as 'module.' or 'model.') with weights_only=True, match it to --model, write DST "
            "atomically and score full MAML on a few validation tasks.", _import_options, _import,
            ("patternsearch import-checkpoint my_maml.pt --out runs/mine.pt --model conv4 --inner-lr 0.4 "
             "--eval-steps 10 --data-root DATA",)),
)
