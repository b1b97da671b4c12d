"""Omniglot (Lake et al., 2015): ``omniglot-small`` and ``omniglot``.

Images are resized to 28x28 with strokes = 1 and background = 0. Every
90-degree rotation of a character is a class of its own, in every split.

* ``omniglot-small``: the two "minimal" background archives, 8 alphabets,
  split by alphabet: train Balinese, Early_Aramaic, Japanese_(katakana),
  Korean, Sanskrit; val Greek, Tagalog; test Latin.
* ``omniglot``: ``images_background.zip`` (30 alphabets) is the train split;
  the 20 alphabets of ``images_evaluation.zip``, sorted by name, give val (the
  first 10) and test (the last 10).

Preprocessed arrays are cached in ``<cache>/preprocessed``, keyed by the
archive's md5.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._archives import Archive, DataError, atomic_write_bytes, cache_home, ensure_archives, md5sum, resolve_data_root
from ._identity import definition_identity
from ._registry import register_benchmark
from ._tasks import Benchmark, ClassEpisodes, TrainingDefaults, classification_benchmark, split_stream

URL_ENV = "PATTERNSEARCH_OMNIGLOT_URL"
_DEFAULT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
IMAGE_SIZE = 28
ROTATIONS = 4

SMALL_SPLITS = {
    "train": ("Balinese", "Early_Aramaic", "Japanese_(katakana)", "Korean", "Sanskrit"),
    "val": ("Greek", "Tagalog"),
    "test": ("Latin",),
}


def _archive(filename: str, md5: str) -> Archive:
    base = os.environ.get(URL_ENV, _DEFAULT_URL).rstrip("/")
    return Archive(filename, md5, f"{base}/{filename}")


def small_archives() -> list[Archive]:
    """The two archives of ``omniglot-small``."""
    return [
        _archive("images_background_small1.zip", "e704a628b5459e08445c13499850abc4"),
        _archive("images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd"),
    ]


def full_archives() -> list[Archive]:
    """The two archives of ``omniglot``: background, then evaluation."""
    return [
        _archive("images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"),
        _archive("images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"),
    ]


CharacterImages = dict[tuple[str, str], np.ndarray]


def _decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return 255 - np.asarray(image, dtype=np.uint8)


def _preprocess(path: Path) -> CharacterImages:
    drawings: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if len(parts) != 4 or not parts[3].endswith(".png"):
                    continue
                drawings.setdefault((parts[1], parts[2]), []).append((parts[3], _decode(archive.read(name))))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable Omniglot archive ({error})") from error
    if not drawings:
        raise DataError(f"{path} holds no <alphabet>/<character>/<drawing>.png images")
    return {key: np.stack([image for _, image in sorted(items)]) for key, items in drawings.items()}


def load_archive(path: Path) -> CharacterImages:
    """Characters of one archive as uint8 arrays ``[drawings, 28, 28]``, cached by md5."""
    cache = cache_home() / "preprocessed" / f"omniglot-{md5sum(path)}-{IMAGE_SIZE}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                keys, images = stored["keys"], stored["images"]
            return {tuple(str(k).split("/", 1)): images[i] for i, k in enumerate(keys)}  # type: ignore[misc]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cache.unlink(missing_ok=True)
    characters = _preprocess(path)
    counts = {len(images) for images in characters.values()}
    if len(counts) == 1:
        buffer = io.BytesIO()
        keys = np.array([f"{a}/{c}" for a, c in characters])
        np.savez(buffer, keys=keys, images=np.stack(list(characters.values())))
        try:
            atomic_write_bytes(cache, buffer.getvalue())
        except OSError:
            pass  # an unwritable cache only costs time
    return characters


def _split_classes(characters: CharacterImages, alphabets: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
    """A split's images, one class per character and rotation, and each character's alphabet (an index)."""
    missing = sorted(set(alphabets) - {alphabet for alphabet, _ in characters})
    if missing:
        raise DataError(f"alphabets missing from the Omniglot archives: {', '.join(missing)}")
    keys = sorted(key for key in characters if key[0] in alphabets)
    images = np.stack([characters[key] for key in keys])  # [chars, drawings, H, W]
    rotations = np.stack([np.rot90(images, r, axes=(2, 3)) for r in range(ROTATIONS)], axis=1)
    rotations = rotations.reshape(-1, images.shape[1], 1, IMAGE_SIZE, IMAGE_SIZE)
    names = sorted({alphabet for alphabet, _ in keys})
    return (torch.from_numpy(np.ascontiguousarray(rotations)).float().div_(255.0),
            [names.index(alphabet) for alphabet, _ in keys])


def _benchmark(
    name: str, splits: dict[str, tuple[torch.Tensor, list[int]]], ways: int, shots: int, queries: int,
    definitions: dict[str, tuple[Sequence[Archive], Sequence[str]]],
) -> Benchmark:
    # Classes are laid out character by character, four rotations each: a character is the independent unit,
    # its alphabet the unit's group.
    sources = {
        split: ClassEpisodes.from_tensor(images, ways, shots, queries, split_stream(split),
                                         class_units=[c // ROTATIONS for c in range(images.shape[0])],
                                         unit_groups=alphabets)
        for split, (images, alphabets) in splits.items()
    }
    defaults = TrainingDefaults(inner_lr=0.4, train_steps=1, eval_steps=10, meta_batch=16, meta_lr=1e-3)
    def identity(split: str) -> str:  # the archives are verified against these sums whenever they are read
        archives, alphabets = definitions[split]
        return definition_identity({"omniglot": sorted(a.md5 for a in archives), "alphabets": sorted(alphabets),
                                    "image_size": IMAGE_SIZE, "rotations": ROTATIONS})

    return classification_benchmark(name, dict(sources), (1, IMAGE_SIZE, IMAGE_SIZE), ways, defaults, identity)


@register_benchmark("omniglot-small")
def omniglot_small(
    ways: int = 5, shots: int = 1, queries: int = 15, data_root: str | os.PathLike[str] | None = None
) -> Benchmark:
    """The 8-alphabet Omniglot benchmark built from the two "small" archives."""
    root = resolve_data_root(data_root)
    characters: CharacterImages = {}
    for path in ensure_archives(small_archives(), root):
        for key, images in load_archive(path).items():
            characters.setdefault(key, images)
    splits = {split: _split_classes(characters, alphabets) for split, alphabets in SMALL_SPLITS.items()}
    return _benchmark("omniglot-small", splits, ways, shots, queries,
                      {split: (small_archives(), alphabets) for split, alphabets in SMALL_SPLITS.items()})


@register_benchmark("omniglot")
def omniglot(
    ways: int = 5, shots: int = 1, queries: int = 15, data_root: str | os.PathLike[str] | None = None
) -> Benchmark:
    """Full Omniglot: background alphabets train, evaluation alphabets halved into val and test."""
    root = resolve_data_root(data_root)
    background_path, evaluation_path = ensure_archives(full_archives(), root)
    background = load_archive(background_path)
    evaluation = load_archive(evaluation_path)
    eval_alphabets = sorted({alphabet for alphabet, _ in evaluation})
    half = len(eval_alphabets) // 2
    splits = {
        "train": _split_classes(background, sorted({alphabet for alphabet, _ in background})),
        "val": _split_classes(evaluation, eval_alphabets[:half]),
        "test": _split_classes(evaluation, eval_alphabets[half:]),
    }
    background_archive, evaluation_archive = full_archives()
    return _benchmark("omniglot", splits, ways, shots, queries, {
        "train": ([background_archive], sorted({alphabet for alphabet, _ in background})),
        "val": ([evaluation_archive], eval_alphabets[:half]), "test": ([evaluation_archive], eval_alphabets[half:])})
