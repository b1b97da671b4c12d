"""Benchmarks over image files: ``image-folder`` and ``mini-imagenet``.

* ``image-folder``: ``DATA_ROOT/{train,val,test}/<class>/<image>``; options
  ``image_size`` (default 84) and ``channels`` (1 or 3, default 3).
* ``mini-imagenet``: the usual layout, ``DATA_ROOT/images/<file>`` plus
  ``train.csv``, ``val.csv`` and ``test.csv`` with ``filename,label`` rows;
  84x84 RGB.

Images are decoded on demand (and kept, as uint8, in a bounded cache), resized
to a square and scaled to [0, 1].
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ._archives import DataError
from ._identity import files_identity
from ._registry import register_benchmark
from ._tasks import SPLITS, Benchmark, ClassEpisodes, TrainingDefaults, classification_benchmark, split_stream

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_CACHE_IMAGES = 50_000


@functools.lru_cache(maxsize=_CACHE_IMAGES)
def _decode(path: str, size: int, channels: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            converted = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(converted, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"cannot read image {path} ({error})") from error
    if channels == 1:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _episodes(class_files: Sequence[Sequence[Path]], size: int, channels: int, ways: int, shots: int,
              queries: int, split: str) -> ClassEpisodes:
    def fetch(class_index: int, indices: np.ndarray) -> torch.Tensor:
        files = class_files[class_index]
        return torch.stack([_decode(str(files[i]), size, channels) for i in indices]).float().div_(255.0)

    try:
        return ClassEpisodes([len(f) for f in class_files], fetch, ways, shots, queries, split_stream(split))
    except ValueError as error:
        raise DataError(f"{split} split: {error}") from None


def _benchmark(name: str, splits: dict[str, ClassEpisodes], size: int, channels: int, ways: int,
               files: dict[str, list[list[Path]]]) -> Benchmark:
    defaults = TrainingDefaults(inner_lr=0.01, train_steps=5, eval_steps=10, meta_batch=4, meta_lr=1e-3)
    return classification_benchmark(name, dict(splits), (channels, size, size), ways, defaults,
                                     lambda split: files_identity(files[split], {"images": "classes of files"}))


def _required_root(data_root: str | os.PathLike[str] | None, name: str, layout: str) -> Path:
    if data_root is None and not os.environ.get("PATTERNSEARCH_DATA"):
        raise DataError(f"the {name} benchmark needs --data-root DIR holding {layout}")
    root = Path(data_root or os.environ["PATTERNSEARCH_DATA"]).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return root


@register_benchmark("image-folder")
def image_folder(
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    data_root: str | os.PathLike[str] | None = None,
    image_size: int = 84,
    channels: int = 3,
) -> Benchmark:
    """Episodes from ``DATA_ROOT/{train,val,test}/<class>/<image>``."""
    root = _required_root(data_root, "image-folder", "train/, val/ and test/ folders with one folder per class")
    if channels not in (1, 3):
        raise DataError(f"image-folder channels must be 1 or 3, got {channels}")
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DataError(f"{root} has no {', '.join(f'{m}/' for m in missing)} folder; expected train/, val/, test/ "
                        "with one folder per class")
    splits, files = {}, {}
    for split in SPLITS:
        classes = sorted(p for p in (root / split).iterdir() if p.is_dir())
        files[split] = [sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes]
        splits[split] = _episodes(files[split], image_size, channels, ways, shots, queries, split)
    return _benchmark("image-folder", splits, image_size, channels, ways, files)


def _read_csv(path: Path) -> dict[str, list[str]]:
    classes: dict[str, list[str]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
                raise DataError(f"{path} needs a 'filename,label' header")
            for row in reader:
                classes.setdefault(row["label"], []).append(row["filename"])
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror})") from None
    return classes


@register_benchmark("mini-imagenet")
def mini_imagenet(
    ways: int = 5, shots: int = 1, queries: int = 15, data_root: str | os.PathLike[str] | None = None
) -> Benchmark:
    """The miniImageNet benchmark from ``images/`` and ``{train,val,test}.csv`` (84x84 RGB)."""
    root = _required_root(data_root, "mini-imagenet", "images/ and train.csv, val.csv, test.csv")
    missing = [name for name in ("images", *(f"{s}.csv" for s in SPLITS)) if not (root / name).exists()]
    if missing:
        raise DataError(f"{root} lacks {', '.join(missing)} (the mini-imagenet layout)")
    splits, files = {}, {}
    for split in SPLITS:
        classes = _read_csv(root / f"{split}.csv")
        files[split] = [[root / "images" / name for name in classes[label]] for label in sorted(classes)]
        splits[split] = _episodes(files[split], 84, 3, ways, shots, queries, split)
    return _benchmark("mini-imagenet", splits, 84, 3, ways, files)
