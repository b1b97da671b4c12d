"""Episodes (few-shot tasks), task sources and the Benchmark description."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {name: i for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class Task:
    """One few-shot episode: a support set to adapt on and a query set to score.

    Attributes:
        x_support: Support inputs.
        y_support: Support targets.
        x_query: Query inputs.
        y_query: Query targets.
        classes: The split's class index behind each way (None for tasks
            without classes, e.g. regression); accuracies say how many
            distinct classes they rest on.
        units: For each way, the independent unit its class comes from
            (Omniglot: the character, whose four rotations are four classes).
            Tasks that share a unit are correlated; confidence intervals
            account for it. Default: the classes themselves.
        groups: For each way, the group its unit belongs to (Omniglot: the
            alphabet), when the benchmark knows one. A new group moves
            patterns unlike each other, so validation proposes each pattern on
            how far a new group may lie below it (see
            :func:`patternsearch.confirmation.validation_front`).
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor
    classes: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None
    groups: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.units is None and self.classes is not None:
            object.__setattr__(self, "units", self.classes)

    def to(self, device: torch.device | str) -> Task:
        """Returns the task on ``device``."""
        tensors = (t.to(device) for t in (self.x_support, self.y_support, self.x_query, self.y_query))
        return Task(*tensors, classes=self.classes, units=self.units, groups=self.groups)


class TaskSource(Protocol):
    """Deterministic episodes: the same (seed, index) gives the same task anywhere."""

    def task(self, index: int, seed: int) -> Task:
        """Returns episode ``index`` of the stream ``seed``."""
        ...


def task_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of one episode, independent of every other episode."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


def split_stream(split: str) -> int:
    """A number that keeps the random streams of the splits apart."""
    return _SPLIT_STREAM[split]


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Fraction of correct arg-max predictions."""
    return float((logits.argmax(dim=-1) == targets).float().mean())


def negative_mse(outputs: Tensor, targets: Tensor) -> float:
    """Negative mean squared error (higher is better)."""
    return -float(F.mse_loss(outputs, targets))


Fetch = Callable[[int, np.ndarray], Tensor]


class ClassEpisodes:
    """N-way K-shot Q-query episodes drawn from examples grouped by class.

    Args:
        class_sizes: Number of examples of each class.
        fetch: ``fetch(class_index, example_indices) -> Tensor[len(indices), ...]``.
        ways: Classes per episode.
        shots: Support examples per class.
        queries: Query examples per class.
        stream: Keeps this split's random stream apart from the others.
        class_units: The independent unit of each class (see :attr:`Task.units`);
            default: every class is its own unit.
        allowed: Draw episodes only from these class indices (see
            :meth:`restricted`); default: all.
        unit_groups: The group of each unit, indexed by unit (see
            :attr:`Task.groups`); default: none known.

    Raises:
        ValueError: If there are too few classes or examples per class.
    """

    def __init__(self, class_sizes: Sequence[int], fetch: Fetch, ways: int, shots: int, queries: int, stream: int,
                 class_units: Sequence[int] | None = None, allowed: Sequence[int] | None = None,
                 unit_groups: Sequence[int] | None = None):
        if ways < 1 or shots < 1 or queries < 1:
            raise ValueError(f"ways, shots and queries must be >= 1 (got {ways}, {shots}, {queries})")
        if len(class_sizes) < ways:
            raise ValueError(f"{ways}-way episodes need at least {ways} classes, the split has {len(class_sizes)}")
        if min(class_sizes) < shots + queries:
            raise ValueError(
                f"episodes need {shots}+{queries} examples per class; the smallest class has {min(class_sizes)}"
            )
        self.class_sizes = list(class_sizes)
        self.fetch = fetch
        self.ways, self.shots, self.queries, self.stream = ways, shots, queries, stream
        self.class_units = list(range(len(class_sizes)) if class_units is None else class_units)
        if len(self.class_units) != len(self.class_sizes):
            raise ValueError(f"{len(self.class_units)} class units for {len(self.class_sizes)} classes")
        self.unit_groups = None if unit_groups is None else list(unit_groups)
        if self.unit_groups is not None and len(self.unit_groups) <= max(self.class_units):
            raise ValueError(f"{len(self.unit_groups)} unit groups for {max(self.class_units) + 1} units")
        self.allowed = np.arange(len(class_sizes)) if allowed is None else np.asarray(sorted(allowed), dtype=int)
        if self.allowed.size < ways:
            raise ValueError(f"{ways}-way episodes need at least {ways} classes, {self.allowed.size} are allowed")

    @classmethod
    def from_tensor(cls, images: Tensor, ways: int, shots: int, queries: int, stream: int,
                    class_units: Sequence[int] | None = None,
                    unit_groups: Sequence[int] | None = None) -> ClassEpisodes:
        """Episodes over ``images[class, example, ...]`` held in memory."""
        return cls([images.shape[1]] * images.shape[0], lambda c, idx: images[c][torch.from_numpy(idx)],
                   ways, shots, queries, stream, class_units, unit_groups=unit_groups)

    def restricted(self, units: Sequence[int]) -> ClassEpisodes:
        """The same episodes' generator limited to the classes of ``units``; class indices stay the split's.

        Raises:
            ValueError: If fewer than ``ways`` classes remain.
        """
        keep = set(units)
        allowed = [c for c in self.allowed.tolist() if self.class_units[c] in keep]
        return ClassEpisodes(self.class_sizes, self.fetch, self.ways, self.shots, self.queries, self.stream,
                             self.class_units, allowed, self.unit_groups)

    @property
    def num_classes(self) -> int:
        """Number of classes in the split."""
        return len(self.class_sizes)

    def task(self, index: int, seed: int) -> Task:
        """Returns episode ``index`` for ``seed``."""
        rng = task_rng(seed, self.stream, index)
        classes = self.allowed[rng.choice(self.allowed.size, self.ways, replace=False)]
        per_class = self.shots + self.queries
        chosen = [self.fetch(int(c), rng.choice(self.class_sizes[c], per_class, replace=False)) for c in classes]
        images = torch.stack(chosen)  # [ways, shots + queries, ...]
        labels = torch.arange(self.ways)
        return Task(
            images[:, : self.shots].flatten(0, 1),
            labels.repeat_interleave(self.shots),
            images[:, self.shots :].flatten(0, 1),
            labels.repeat_interleave(self.queries),
            classes=tuple(int(c) for c in classes),
            units=tuple(int(self.class_units[c]) for c in classes),
            groups=None if self.unit_groups is None else tuple(
                int(self.unit_groups[self.class_units[c]]) for c in classes),
        )


@dataclass(frozen=True)
class TrainingDefaults:
    """Meta-training hyper-parameters suited to a benchmark."""

    inner_lr: float = 0.4
    train_steps: int = 1
    eval_steps: int = 10
    meta_batch: int = 16
    meta_lr: float = 1e-3
    iterations: int = 2000


@dataclass(frozen=True)
class Benchmark:
    """A few-shot benchmark: task sources per split and how to score them.

    Attributes:
        name: Benchmark name.
        splits: ``train``, ``val`` and ``test`` task sources.
        input_shape: Shape of one input example.
        num_outputs: Model outputs (ways, or 1 for regression).
        loss_fn: Training and adaptation loss.
        score_fn: Query score, higher is better (accuracy, negative MSE).
        metric: Name of the score.
        default_model: Model used when none is named.
        defaults: Meta-training defaults.
        identity: ``identity(split)``: a checksum of the data the split reads
            and of its definition (see :meth:`split_identity`); None for a
            benchmark that states none.
    """

    name: str
    splits: dict[str, TaskSource]
    input_shape: tuple[int, ...]
    num_outputs: int
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    score_fn: Callable[[Tensor, Tensor], float]
    metric: str
    default_model: str
    defaults: TrainingDefaults = field(default_factory=TrainingDefaults)
    identity: Callable[[str], str] | None = field(default=None, compare=False, repr=False)

    def split_identity(self, name: str) -> str:
        """The identity of split ``name``: the key of the looks at it (:mod:`patternsearch.looks`).

        Two benchmarks that read the same data for the split share it; a
        benchmark that states no ``identity`` (a plug-in) is known by its name
        and the split's.
        """
        self.split(name)
        if self.identity is None:
            return f"{self.name}:{name}"
        return self.identity(name)

    def split(self, name: str) -> TaskSource:
        """The task source of a split (``train``, ``val`` or ``test``)."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; choose from {', '.join(self.splits)}")
        return self.splits[name]

    def tasks(self, split: str, count: int, seed: int) -> list[Task]:
        """The first ``count`` episodes of ``split`` for ``seed``."""
        source = self.split(split)
        return [source.task(i, seed) for i in range(count)]


def classification_benchmark(
    name: str,
    splits: dict[str, TaskSource],
    input_shape: tuple[int, ...],
    ways: int,
    defaults: TrainingDefaults,
    identity: Callable[[str], str] | None = None,
) -> Benchmark:
    """An N-way image classification benchmark: cross-entropy, accuracy, ``conv4`` by default."""
    return Benchmark(
        name=name,
        splits=splits,
        input_shape=input_shape,
        num_outputs=ways,
        loss_fn=F.cross_entropy,
        score_fn=accuracy,
        metric="accuracy",
        default_model="conv4",
        defaults=defaults,
        identity=identity,
    )


DECISION_SHARE = 0.75
"""The share of a split's units the deciding task list draws from (20 of omniglot-small's 26 test characters).

Chosen by ``examples/selection_power.py --shipped-only --characters 17|20``:
three quarters instead of two thirds raised the confirmation's simulated mean
speedup by 1-6% per front at the same family-wise error; the report, which
decides nothing, rests on fewer characters (6 instead of 9).
"""


def disjoint_task_sets(
    benchmark: Benchmark, split: str, first: int, second: int, seed: int
) -> tuple[list[Task], list[Task], bool]:
    """Two task lists from ``split`` that share no class when the split allows it.

    With :class:`ClassEpisodes` the split's independent units (e.g. Omniglot
    characters) are shuffled with ``seed``; the first list draws only from
    ``DECISION_SHARE`` of them (it decides, and needs the precision), the
    second from the rest, so it is independent of anything decided on the
    first. Other task sources (or splits too small to divide) give disjoint
    episodes of the same classes.

    Returns:
        The first list, the second list, and whether their classes are disjoint.
    """
    source = benchmark.split(split)
    if isinstance(source, ClassEpisodes):
        units = sorted({source.class_units[c] for c in source.allowed.tolist()})
        order = np.random.default_rng([int(seed), 7919]).permutation(len(units))
        cut = min(round(len(units) * DECISION_SHARE), len(units) - 1)
        try:
            a = source.restricted([units[i] for i in order[:cut]])
            b = source.restricted([units[i] for i in order[cut:]])
        except ValueError:
            pass
        else:
            return ([a.task(i, seed) for i in range(first)],
                    [b.task(first + i, seed) for i in range(second)], True)
    return ([source.task(i, seed) for i in range(first)],
            [source.task(first + i, seed) for i in range(second)], False)
