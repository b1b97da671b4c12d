from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from patternsearch import create_benchmark, list_benchmarks
from patternsearch.benchmarks import DataError
from patternsearch.benchmarks._archives import Archive, ensure_archives
from patternsearch.benchmarks.omniglot import load_archive

from .conftest import make_omniglot_zip


def test_builtin_benchmarks_are_listed() -> None:
    assert {"omniglot", "omniglot-small", "sinusoid"} <= set(list_benchmarks())
    assert list_benchmarks("omniglot*") == ["omniglot", "omniglot-small"]


def test_real_small_archives_split_by_alphabet_with_rotation_classes(omniglot_root: Path) -> None:
    bench = create_benchmark("omniglot-small", ways=5, shots=1, queries=15, data_root=omniglot_root)
    # characters x 4 rotations: train 24+22+47+40+42, val 24+17, test 26
    assert {name: source.num_classes for name, source in bench.splits.items()} == {
        "train": 700, "val": 164, "test": 104,
    }
    task = bench.split("test").task(3, seed=7)
    assert task.x_support.shape == (5, 1, 28, 28)
    assert task.x_query.shape == (75, 1, 28, 28)
    assert task.y_support.tolist() == [0, 1, 2, 3, 4]
    assert 0.0 <= float(task.x_support.min()) and float(task.x_support.max()) <= 1.0
    # strokes are 1 on a 0 background: most pixels are dark
    assert float(task.x_query.mean()) < 0.3
    # each rotation is its own class: class 4k+1 is class 4k rotated by 90 degrees
    fetch = bench.split("test").fetch
    every = np.arange(20)
    assert torch.equal(torch.rot90(fetch(0, every), 1, dims=(2, 3)), fetch(1, every))


def test_episodes_are_deterministic_and_distinct(omniglot_root: Path) -> None:
    first = create_benchmark("omniglot-small", data_root=omniglot_root).split("val")
    again = create_benchmark("omniglot-small", data_root=omniglot_root).split("val")
    a, b, c = first.task(5, seed=1), again.task(5, seed=1), first.task(6, seed=1)
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.x_query, b.x_query)
    assert not torch.equal(a.x_support, c.x_support)
    assert not torch.equal(a.x_support, first.task(5, seed=2).x_support)


def test_preprocessed_arrays_are_cached_by_checksum(omniglot_root: Path, isolated_home: Path) -> None:
    path = omniglot_root / "images_background_small2.zip"
    first = load_archive(path)
    cached = list((isolated_home / "preprocessed").glob("omniglot-b75a71a51d3b13f821f212756fe481fd-28.npz"))
    assert len(cached) == 1
    second = load_archive(path)
    assert first.keys() == second.keys()
    key = next(iter(first))
    assert (first[key] == second[key]).all()


def test_sinusoid_tasks_follow_finn_et_al() -> None:
    bench = create_benchmark("sinusoid", shots=10, queries=20)
    task = bench.split("train").task(0, seed=0)
    assert task.x_support.shape == (10, 1) and task.x_query.shape == (20, 1)
    assert float(task.x_support.abs().max()) <= 5.0
    assert float(task.y_query.abs().max()) <= 5.0
    assert bench.metric == "neg_mse" and bench.score_fn(task.y_query, task.y_query) == 0.0


def test_missing_explicit_data_folder_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        create_benchmark("omniglot-small", data_root=tmp_path / "nowhere")


def test_corrupted_archive_is_named_with_its_checksums(tmp_path: Path) -> None:
    (tmp_path / "images_background.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError) as error:
        create_benchmark("omniglot", data_root=tmp_path)
    message = str(error.value)
    assert "images_background.zip" in message and "68d2efa1b9178cc56df9314c21c6e718" in message
    assert "\n" not in message


def test_offline_download_error_names_files_sums_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        create_benchmark("omniglot", data_root=tmp_path)
    message = str(error.value)
    for fact in ("images_background.zip", "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811",
                 str(tmp_path), "--data-root"):
        assert fact in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder (the "Omniglot repository")."""
    folder = tmp_path / "remote"
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_checksum_and_writes_atomically(served: tuple[str, Path], tmp_path: Path) -> None:
    url, remote = served
    archive_path = make_omniglot_zip(remote / "images_background.zip", "images_background", {"Alpha": 3}, drawers=4)
    target = tmp_path / "data"
    target.mkdir()
    good = Archive("images_background.zip", _md5(archive_path), f"{url}/images_background.zip")
    [path] = ensure_archives([good], target)
    assert _md5(path) == good.md5
    characters = load_archive(path)
    assert sorted(characters) == [("Alpha", f"character0{i}") for i in (1, 2, 3)]
    assert characters[("Alpha", "character01")].shape == (4, 28, 28)

    other = tmp_path / "other"
    other.mkdir()
    bad = Archive("images_background.zip", "0" * 32, f"{url}/images_background.zip")
    with pytest.raises(DataError, match="has md5 .* expected 0{32}"):
        ensure_archives([bad], other)
    assert list(other.iterdir()) == []


def test_full_omniglot_layout_from_generated_archives(served: tuple[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url, remote = served
    background = make_omniglot_zip(remote / "images_background.zip", "images_background",
                                   {"A1": 2, "A2": 2}, drawers=3, seed=1)
    evaluation = make_omniglot_zip(remote / "images_evaluation.zip", "images_evaluation",
                                   {"E1": 2, "E2": 1, "E3": 2, "E4": 1}, drawers=3, seed=2)
    from patternsearch.benchmarks import omniglot

    monkeypatch.setattr(omniglot, "full_archives", lambda: [
        Archive("images_background.zip", _md5(background), f"{url}/images_background.zip"),
        Archive("images_evaluation.zip", _md5(evaluation), f"{url}/images_evaluation.zip"),
    ])
    root = tmp_path / "data"
    root.mkdir()
    bench = create_benchmark("omniglot", ways=2, shots=1, queries=2, data_root=root)
    # val = first half of the sorted evaluation alphabets (E1, E2), test = the rest (E3, E4)
    assert {name: s.num_classes for name, s in bench.splits.items()} == {"train": 16, "val": 12, "test": 12}
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip", "images_evaluation.zip"]
