from __future__ import annotations

import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from patternsearch import ExperimentSpec

REPO = Path(__file__).resolve().parents[1]
# The tiny regression experiment most search tests run on (a checkpoint path is added per test).
SINUSOID = ExperimentSpec(benchmark="sinusoid", shots=5, queries=10, device="cpu")
# The real archives live beside the repository (never inside it); PATTERNSEARCH_TEST_OMNIGLOT overrides.
SHARED_OMNIGLOT = Path(os.environ.get("PATTERNSEARCH_TEST_OMNIGLOT", REPO.parent / "shared" / "data" / "omniglot"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache folder and working folder; downloads go to a closed local port.

    The working folder keeps what commands write by default (``studies/patternsearch.db`` with its ledger of
    looks at test splits, ``tuned/``, ``report/``) out of the repository and out of other tests' way.
    """
    home = tmp_path_factory.mktemp("pshome")
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("PATTERNSEARCH_HOME", str(home))
    monkeypatch.delenv("PATTERNSEARCH_DATA", raising=False)
    monkeypatch.setenv("PATTERNSEARCH_OMNIGLOT_URL", "http://127.0.0.1:9/omniglot")
    return home


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    assert (SHARED_OMNIGLOT / "images_background_small1.zip").is_file(), f"no Omniglot data in {SHARED_OMNIGLOT}"
    return SHARED_OMNIGLOT


def make_omniglot_zip(path: Path, top: str, alphabets: dict[str, int], drawers: int = 20, seed: int = 0) -> Path:
    """Writes a zip in the Omniglot layout: top/<Alphabet>/characterNN/<id>_<drawer>.png (105x105, mode 1)."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/", b"")
        for alphabet, characters in alphabets.items():
            for c in range(1, characters + 1):
                for d in range(1, drawers + 1):
                    pixels = rng.random((105, 105)) > 0.1
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
                    archive.writestr(f"{top}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png", buffer.getvalue())
    return path


class ResidualNet(nn.Module):
    """A non-sequential model: a residual connection and GroupNorm."""

    def __init__(self, num_classes: int = 5, input_shape: tuple[int, ...] = (1, 28, 28), width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], width, 3, padding=1)
        self.stem_norm = nn.GroupNorm(2, width)
        self.conv_a = nn.Conv2d(width, width, 3, padding=1)
        self.norm_a = nn.GroupNorm(2, width)
        self.conv_b = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem_norm(self.stem(x)))
        r = torch.relu(self.norm_a(self.conv_a(h)))
        h = torch.relu(h + self.conv_b(r))
        return self.head(h.mean(dim=(2, 3)))


def dropout_bn_net(width: int) -> nn.Sequential:
    """A user's model: batch norm with running statistics and dropout before the last block, a flattening head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.3),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(4 * width, 5),
    )


@pytest.fixture(scope="session")
def sinusoid_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly meta-trained mlp on sinusoids (3 groups, eval steps 10)."""
    from patternsearch import TrainConfig, train

    path = tmp_path_factory.mktemp("ckpt") / "sinusoid-mlp.pt"
    config = TrainConfig(benchmark="sinusoid", model="mlp", shots=5, queries=10, meta_batch=4, iterations=20,
                         val_every=20, val_tasks=5, device="cpu")
    train(config, path, progress=False)
    return path


def measured_attrs(pattern: str, accuracy: float, speedup: float, device: str = "cpu",
                   scores: list[float] | None = None) -> dict[str, object]:
    """The user attributes of a measured trial (what ``optimize`` stores), for hand-built studies."""
    from patternsearch.measurement import Measurement

    scores = [accuracy] * 10 if scores is None else scores
    return Measurement(pattern=pattern, accuracy=accuracy, ci95=0.01, scores=scores, tasks_scored=len(scores),
                       latency_ms=10.0 / speedup, latency_iqr_ms=0.0, baseline_latency_ms=10.0,
                       latency_ratio=1.0 / speedup, speedup=speedup, flops=1000, device=device).user_attrs()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of the test's own (made, then dropped), for commands that confirm on a server storage.

    The ledger of looks at a test split lives in the storage: in the shared ``test`` database every run would
    spend from the same split's budget, and after some dozens of runs nothing would be left to confirm with.
    """
    import sqlalchemy

    database = f"ps_{uuid.uuid4().hex[:16]}"
    admin = sqlalchemy.create_engine("postgresql://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{database}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()
