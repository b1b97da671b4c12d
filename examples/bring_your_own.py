"""Bring your own meta-trained model: train it with your own MAML loop, import it, search, select.

1. Meta-trains ``SmallConvNet`` (defined below: conv blocks with batch norm
   that tracks running statistics, as many user models have) with a plain
   PyTorch MAML loop on omniglot-small's training alphabets: first-order
   MAML, a handful of inner steps, Adam on the outer loop.
2. Saves ``model.state_dict()`` under ``module.`` keys, as a learn2learn
   ``MAML`` wrapper would.
3. Imports it with ``patternsearch.importing.import_checkpoint`` (the
   ``import-checkpoint`` command does the same), naming this file's
   ``build`` function as the model (loading a plug-in runs its code: this
   file's).
4. Runs a short ``optimize`` and ``select`` and prints the choice.

Run: python examples/bring_your_own.py --data-root ../shared/data/omniglot --out runs/byo
(a few minutes on a 2-core CPU; the test runs it with tiny settings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from patternsearch import ExperimentSpec, create_benchmark, import_checkpoint, optimize, select
from patternsearch.search import REPORT_TIMED_ROUNDS

INNER_LR, INNER_STEPS = 0.4, 3


class SmallConvNet(nn.Module):
    """Three conv blocks (conv, batch norm with running statistics, ReLU, max-pool) and a linear head."""

    def __init__(self, num_classes: int = 5, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        blocks = []
        for i in range(3):
            blocks += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.head = nn.Linear(width * 3 * 3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(num_classes: int, input_shape: tuple[int, ...] = (1, 28, 28)) -> nn.Module:
    """The model factory patternsearch calls (``--model examples/bring_your_own.py:build``)."""
    return SmallConvNet(num_classes, channels=input_shape[0])


def meta_train(model: nn.Module, benchmark, iterations: int, meta_batch: int) -> None:  # type: ignore[no-untyped-def]
    """First-order MAML, written out: adapt a functional copy per task, average the query gradients."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    source = benchmark.split("train")
    model.train()
    for iteration in range(iterations):
        optimizer.zero_grad()
        for b in range(meta_batch):
            task = source.task(iteration * meta_batch + b, 0)
            fast = {name: p for name, p in model.named_parameters()}
            for _ in range(INNER_STEPS):
                loss = F.cross_entropy(functional_call(model, fast, (task.x_support,)), task.y_support)
                grads = torch.autograd.grad(loss, list(fast.values()))
                fast = {name: p - INNER_LR * g.detach() for (name, p), g in zip(fast.items(), grads, strict=True)}
            query_loss = F.cross_entropy(functional_call(model, fast, (task.x_query,)), task.y_query)
            (query_loss / meta_batch).backward()
        optimizer.step()
        if (iteration + 1) % max(1, iterations // 5) == 0:
            print(f"meta-iteration {iteration + 1}/{iterations}: query loss {query_loss.item():.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/byo"))
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=100, help="validation tasks of the search")
    parser.add_argument("--test-tasks", type=int, default=300)
    parser.add_argument("--timed-rounds", type=int, default=REPORT_TIMED_ROUNDS,
                        help="interleaved timing rounds of the reported speedup")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would bury the answer

    benchmark = create_benchmark("omniglot-small", 5, 1, 15, args.data_root)
    model = build(5)
    meta_train(model, benchmark, args.iterations, args.meta_batch)
    weights = args.out / "my_maml.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, weights)  # learn2learn-style keys

    plugin = f"{Path(__file__).resolve()}:build"
    checkpoint = args.out / "imported.pt"
    spec = ExperimentSpec(benchmark="omniglot-small", model=plugin, data_root=args.data_root, device="cpu")
    imported = import_checkpoint(weights, checkpoint, spec, inner_lr=INNER_LR, eval_steps=INNER_STEPS,
                                 train_steps=INNER_STEPS, check_tasks=20)
    print(f"imported: full MAML on validation tasks {imported.full.describe()}")
    if imported.warning:
        print(f"warning: {imported.warning}")

    storage = f"sqlite:///{args.out.resolve()}/study.db"
    optimize(args.trials, spec.but(checkpoint=str(checkpoint)), storage=storage, tasks=args.tasks,
             max_steps=INNER_STEPS * 2, progress=False)
    choice = select(0.02, storage=storage, data_root=args.data_root, checkpoint=checkpoint, device="cpu",
                    test_tasks=args.test_tasks, timed_rounds=args.timed_rounds)
    summary = {"pattern": choice.pattern, "confirmed": choice.confirmed, "reason": choice.reason,
               "lower_bound": choice.confirmation.lower_bound, "speedup": choice.timing.speedup,
               "test_accuracy": choice.fresh.accuracy, "baseline_test_accuracy": choice.fresh.baseline_accuracy,
               "imported_full_accuracy": imported.full.mean}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"selected {choice.pattern} ({'confirmed' if choice.confirmed else 'not confirmed'}: {choice.reason})")
        print(f"  {choice.fresh.describe()}; speedup {choice.timing.speedup:.1f}x")


if __name__ == "__main__":
    main()
