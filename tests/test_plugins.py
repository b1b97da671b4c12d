from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patternsearch import Pattern, adapt, create_model, layer_groups, list_models, reference_adapt
from patternsearch.checkpoint import CheckpointError, load_weights
from patternsearch.registry import PluginError

REPO = Path(__file__).resolve().parents[1]

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn


    class Residual(nn.Module):
        def __init__(self, num_classes, input_shape=(1, 16, 16)):
            super().__init__()
            self.stem = nn.Conv2d(input_shape[0], 8, 3, padding=1)
            self.stem_norm = nn.GroupNorm(2, 8)
            self.body = nn.Conv2d(8, 8, 3, padding=1)
            self.body_norm = nn.GroupNorm(2, 8)
            self.head = nn.Linear(8, num_classes)

        def forward(self, x):
            h = torch.relu(self.stem_norm(self.stem(x)))
            h = torch.relu(h + self.body_norm(self.body(h)))
            return self.head(h.mean(dim=(2, 3)))


    def build(num_classes, input_shape=(1, 16, 16)):
        return Residual(num_classes, input_shape)


    def wrong_output(num_classes, input_shape=(1, 16, 16)):
        return Residual(num_classes + 3, input_shape)
''')


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """train/val/test with 6 classes x 6 images each: each class a bright square somewhere."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in range(6):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(6):
                pixels = (rng.random((20, 20)) * 60).astype(np.uint8)
                pixels[(c * 3) % 16: (c * 3) % 16 + 4, c * 2: c * 2 + 4] = 255
                Image.fromarray(pixels).convert("RGB").save(folder / f"{i}.png")
    return root


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "patternsearch", *args], capture_output=True, text=True,
                            env=os.environ, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_file_model_matches_reference(model_file: Path) -> None:
    torch.manual_seed(0)
    model = create_model(f"{model_file}:build", num_classes=5, input_shape=(1, 16, 16))
    assert [g.name for g in layer_groups(model)] == ["stem", "body", "head"]
    x, y = torch.randn(10, 1, 16, 16), torch.arange(5).repeat(2)
    for text in ("111:3", "010:2", "001:4", "101:2"):
        fast = adapt(model, x, y, Pattern.parse(text), 0.2)
        slow = reference_adapt(model, x, y, Pattern.parse(text), 0.2)
        assert max(float((fast[k] - slow[k]).norm() / slow[k].norm()) for k in fast) < 1e-5


def test_plugged_model_and_image_folder_end_to_end(model_file: Path, image_folder: Path, tmp_path: Path) -> None:
    model = f"{model_file}:build"
    data = ["--benchmark", "image-folder", "--data-root", str(image_folder), "--benchmark-option", "image_size=16",
            "--benchmark-option", "channels=1", "--ways", "3", "--queries", "2", "--device", "cpu"]
    groups = json.loads(cli("groups", "--model", model, *data, "--json").stdout)
    assert [g["name"] for g in groups] == ["stem", "body", "head"]
    storage = f"sqlite:///{tmp_path}/s.db"
    out = cli("optimize", "--model", model, *data, "--storage", storage, "--trials", "4", "--tasks", "4",
              "--latency-tasks", "1", "--repeats", "1", "--train-iterations", "3", "--heartbeat-interval", "2")
    assert "meta-training one first" in out.stderr and "Pareto front" in out.stdout
    evaluation = json.loads(cli("evaluate", "--model", model, *data, "--pattern", "011:2", "--tasks", "4",
                                "--json").stdout)
    assert evaluation["pattern"] == "011:2" and 0.0 <= evaluation["accuracy"] <= 1.0
    selection = json.loads(cli("select", "--storage", storage, "--data-root", str(image_folder), "--tasks", "4",
                               "--timed-tasks", "1", "--timed-rounds", "2", "--json").stdout)
    assert selection["baseline"] == "111:10" and selection["fresh"]["accuracy"] is not None


def test_example_plugin_package_is_discovered_through_entry_points(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(REPO / "examples" / "plugin")], check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    script = ("import patternsearch as ps; print(ps.list_models('tiny*')); print(ps.list_benchmarks('square*')); "
              "m = ps.create_model('tiny-convnet', 5, input_shape=(1, 16, 16)); print(len(ps.layer_groups(m)))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.split("\n")[:3] == ["['tiny-convnet']", "['square-waves']", "3"]
    ckpt = tmp_path / "w.pt"
    subprocess.run([sys.executable, "-m", "patternsearch", "train", "--benchmark", "square-waves", "--model", "mlp",
                    "--iterations", "3", "--val-every", "3", "--val-tasks", "3", "--checkpoint", str(ckpt)],
                   check=True, capture_output=True, env=env, timeout=300)
    out = subprocess.run([sys.executable, "-m", "patternsearch", "evaluate", "--benchmark", "square-waves",
                          "--checkpoint", str(ckpt), "--tasks", "5", "--json"],
                         check=True, capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(out.stdout)["pattern"] == "111:5"
    disabled = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**env, "PATTERNSEARCH_NO_PLUGINS": "1"})
    assert disabled.returncode != 0 and "unknown model 'tiny-convnet'" in disabled.stderr


def test_unknown_model_lists_available() -> None:
    with pytest.raises(PluginError, match="unknown model 'nope'; available: .*conv4.*mlp.*resnet12"):
        create_model("nope", 5)
    assert {"conv4", "mlp", "resnet12"} <= set(list_models())
    assert list_models("conv*") == ["conv4"]


def test_failing_plugins_are_named(tmp_path: Path, model_file: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match=r"broken.py failed to import: RuntimeError: boom"):
        create_model(f"{broken}:build", 5)
    with pytest.raises(PluginError, match="module 'no_such_module' failed to import"):
        create_model("no_such_module:build", 5)
    with pytest.raises(PluginError, match="has no attribute 'missing'"):
        create_model(f"{model_file}:missing", 5)
    with pytest.raises(PluginError, match=r"outputs \(2, 8\) for a batch of 2, but the benchmark needs 5"):
        create_model(f"{model_file}:wrong_output", 5, input_shape=(1, 16, 16))


def test_checkpoint_of_another_architecture_names_keys(model_file: Path) -> None:
    conv = create_model("conv4", 5)
    other = create_model(f"{model_file}:build", 5, input_shape=(1, 16, 16))
    with pytest.raises(CheckpointError, match="missing block1.conv.bias") as error:
        load_weights(conv, other.state_dict(), "conv4")
    assert "unexpected body.bias" in str(error.value)


def test_resnet12_prefix_cache_at_block_boundaries() -> None:
    torch.manual_seed(0)
    model = create_model("resnet12", 5, input_shape=(3, 32, 32), widths=(8, 8, 16, 16))
    groups = layer_groups(model)
    assert len(groups) == 17
    x, y = torch.randn(5, 3, 32, 32), torch.arange(5)
    for flags in ("0" * 16 + "1", "0" * 6 + "1" + "0" * 9 + "1", "1" * 17):
        pattern = Pattern.parse(f"{flags}:2")
        fast, slow = adapt(model, x, y, pattern, 0.1), reference_adapt(model, x, y, pattern, 0.1)
        assert max(float((fast[k] - slow[k]).norm() / slow[k].norm().clamp_min(1e-12)) for k in fast) < 1e-5


def test_mini_imagenet_layout(tmp_path: Path) -> None:
    from patternsearch import create_benchmark
    from patternsearch.benchmarks import DataError

    root = tmp_path / "mini"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, labels in (("train", "abcdef"), ("val", "ghijk"), ("test", "lmnop")):
        rows = ["filename,label"]
        for label in labels:
            for i in range(4):
                name = f"n{label}{i:04d}.jpg"
                Image.fromarray((rng.random((90, 100, 3)) * 255).astype(np.uint8)).save(root / "images" / name)
                rows.append(f"{name},n{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    bench = create_benchmark("mini-imagenet", ways=5, shots=1, queries=3, data_root=root)
    assert {s: bench.splits[s].num_classes for s in ("train", "val", "test")} == {"train": 6, "val": 5, "test": 5}
    task = bench.split("test").task(0, seed=0)
    assert task.x_support.shape == (5, 3, 84, 84) and task.x_query.shape == (15, 3, 84, 84)
    assert 0.0 <= float(task.x_query.min()) and float(task.x_query.max()) <= 1.0
    model = create_model("conv4", 5, input_shape=bench.input_shape, hidden=8)
    adapted = adapt(model, task.x_support, task.y_support, Pattern.parse("00011:1"), 0.01)
    assert set(adapted) == {n for n, _ in model.named_parameters()}
    (root / "val.csv").unlink()
    with pytest.raises(DataError, match="lacks val.csv"):
        create_benchmark("mini-imagenet", data_root=root)


def test_image_folder_errors_name_the_layout(tmp_path: Path) -> None:
    from patternsearch import create_benchmark
    from patternsearch.benchmarks import DataError

    with pytest.raises(DataError, match="needs --data-root"):
        create_benchmark("image-folder")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has no val/, test/ folder"):
        create_benchmark("image-folder", data_root=tmp_path)
