"""A user's own model: adaptation in its current mode, nothing leaked, prefix cache bounded, imports."""

from __future__ import annotations

import gc
import json
import pickle
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest
import torch

from patternsearch import ExperimentSpec, Pattern, adapt, create_benchmark, load_checkpoint, reference_adapt
from patternsearch.adaptation import _cache
from patternsearch.checkpoint import default_checkpoint_path
from patternsearch.experiment import open_experiment
from patternsearch.importing import import_checkpoint
from patternsearch.measurement import CachedScorer, score_pattern
from patternsearch.measurement._scoring import _ShardScorer

from .conftest import REPO, dropout_bn_net


def _support() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(10, 1, 8, 8, generator=generator), torch.arange(5).repeat(2)


def _max_relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-12)) for k in b)


@pytest.mark.parametrize("text", ["111:3", "011:3", "001:4"])
def test_adaptation_follows_the_mode_the_model_is_in_now(text: str) -> None:
    model = dropout_bn_net(6)
    x, y = _support()
    pattern = Pattern.parse(text)
    adapt(model, x, y, pattern, 0.1)  # first call in training mode: plans and the private copy are made here
    model.eval()
    first, second = adapt(model, x, y, pattern, 0.1), adapt(model, x, y, pattern, 0.1)
    assert all(torch.equal(first[k], second[k]) for k in first)  # dropout off: deterministic
    assert _max_relative_error(first, reference_adapt(model, x, y, pattern, 0.1)) < 1e-5
    model.train()  # and back: dropout on, the same random draws as the naive loop
    torch.manual_seed(5)
    fast = adapt(model, x, y, pattern, 0.1)
    torch.manual_seed(5)
    naive = reference_adapt(model, x, y, pattern, 0.1)
    assert _max_relative_error(fast, naive) < 1e-5
    assert not all(torch.equal(fast[k], first[k]) for k in first)


def test_adaptation_never_changes_running_statistics() -> None:
    model = dropout_bn_net(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _support()
    for mode in (True, False):
        model.train(mode)
        adapt(model, x, y, Pattern.parse("011:3"), 0.1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plans_and_private_copies_die_with_their_model() -> None:
    model = dropout_bn_net(6)
    x, y = _support()
    for text in ("111:2", "011:2", "001:1"):
        adapt(model, x, y, Pattern.parse(text), 0.1)
    shadow = _cache(model).shadow
    assert shadow is not None
    model_ref, shadow_ref = weakref.ref(model), weakref.ref(shadow)
    del model, shadow
    gc.collect()
    assert model_ref() is None and shadow_ref() is None


def test_copies_and_pickles_of_a_model_carry_no_adaptation_state() -> None:
    import copy

    model = dropout_bn_net(6)
    adapt(model, *_support(), Pattern.parse("011:1"), 0.1)
    assert _cache(copy.deepcopy(model)).shadow is None
    assert _cache(pickle.loads(pickle.dumps(model))).plans == {}


def _tiny_tasks(count: int = 8):  # type: ignore[no-untyped-def]
    bench = create_benchmark("sinusoid", shots=5, queries=5)
    return bench, bench.tasks("val", count, seed=0)


def test_scoring_threads_end_with_the_call_also_when_one_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from patternsearch import create_model

    bench, tasks = _tiny_tasks()
    scorer = CachedScorer(create_model("mlp", 1), bench, tasks, 0.01, threads=2)
    before = threading.active_count()
    scorer.scores(Pattern.parse("111:2"))
    assert threading.active_count() == before
    original = _ShardScorer.scores

    def failing(self, pattern, tasks=None):  # type: ignore[no-untyped-def]
        if self is scorer._shards[1]:
            raise FloatingPointError("diverged (simulated)")
        return original(self, pattern, tasks)

    monkeypatch.setattr(_ShardScorer, "scores", failing)
    with pytest.raises(FloatingPointError):
        scorer.scores(Pattern.parse("011:2"))
    assert threading.active_count() == before


@pytest.mark.parametrize("budget", [0, 1 << 30])
def test_prefix_features_are_computed_once_per_task_per_trial_whatever_the_budget(budget: int) -> None:
    from patternsearch import create_model

    bench, tasks = _tiny_tasks(16)
    scorer = CachedScorer(create_model("mlp", 1), bench, tasks, 0.01, threads=2, feature_bytes=budget)
    chunks = [list(range(i, 16, 4)) for i in range(4)]  # the search's strided chunks
    for chunk in chunks:
        scorer.scores(Pattern.parse("001:3"), chunk)
    assert scorer.features_computed == 16  # one per task, not one per task per chunk
    for chunk in chunks:  # another trial with the same frozen prefix
        scorer.scores(Pattern.parse("001:5"), chunk)
    assert scorer.features_computed == (16 if budget else 32)


def _shipped(omniglot_root: Path):  # type: ignore[no-untyped-def]
    path = default_checkpoint_path("omniglot-small", "conv4", 5, 1)
    return path, load_checkpoint(path)


def _import_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patternsearch", "import-checkpoint", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_a_learn2learn_state_dict_imports_and_evaluates_like_the_original(omniglot_root: Path,
                                                                          tmp_path: Path) -> None:
    path, shipped = _shipped(omniglot_root)
    source = tmp_path / "maml.pt"
    torch.save({"module." + k: v for k, v in shipped.state_dict.items()}, source)
    out = tmp_path / "imported.pt"
    result = _import_cli(str(source), "--out", str(out), "--model", "conv4", "--inner-lr", "0.4",
                         "--eval-steps", "10", "--data-root", str(omniglot_root), "--check-tasks", "10",
                         "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["warning"] is None and report["full"]["mean"] > 0.8 and report["full"]["tasks"] == 10
    scores = {}
    for checkpoint in (path, out):
        experiment = open_experiment(ExperimentSpec(data_root=omniglot_root, checkpoint=checkpoint, device="cpu"))
        tasks = experiment.tasks("test", 12, 0)
        scores[checkpoint] = score_pattern(experiment.model, experiment.benchmark, tasks, experiment.full,
                                           experiment.inner_lr)
    assert (scores[path] == scores[out]).all()
    imported = load_checkpoint(out)
    assert imported.mode == "train" and imported.config["imported_from"]["path"] == str(source.resolve())


def test_nested_and_prefixed_state_dicts_import(omniglot_root: Path, tmp_path: Path) -> None:
    _, shipped = _shipped(omniglot_root)
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in shipped.state_dict.items()}, "epoch": 3}, lightning)
    custom = tmp_path / "custom.pt"
    torch.save({"model_state_dict": {"learner.net." + k: v for k, v in shipped.state_dict.items()}}, custom)
    spec = ExperimentSpec(model="conv4", data_root=omniglot_root, device="cpu")
    common = dict(inner_lr=0.4, eval_steps=10, check_tasks=4)
    assert import_checkpoint(lightning, tmp_path / "a.pt", spec, **common).warning is None
    result = import_checkpoint(custom, tmp_path / "b.pt", spec, strip_prefix="learner.net.", mode="eval", **common)
    assert load_checkpoint(tmp_path / "b.pt").mode == "eval"
    experiment = open_experiment(spec.but(checkpoint=tmp_path / "b.pt"))
    assert not experiment.model.training and result.full.tasks == 4


@pytest.mark.parametrize(("content", "message"), [
    ("module", "holds pickled Python objects"),
    ("wrong-keys", "missing"),
    ("not-a-dict", "holds no state dict"),
])
def test_bad_sources_are_refused_in_one_line(omniglot_root: Path, tmp_path: Path, content: str,
                                             message: str) -> None:
    from patternsearch import create_model

    source = tmp_path / "bad.pt"
    if content == "module":
        torch.save(create_model("conv4", 5), source)
    elif content == "wrong-keys":
        torch.save({"encoder.weight": torch.zeros(3)}, source)
    else:
        torch.save([torch.zeros(2)], source)
    out = tmp_path / "out.pt"
    result = _import_cli(str(source), "--out", str(out), "--inner-lr", "0.4", "--eval-steps", "10",
                         "--data-root", str(omniglot_root))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_an_untrained_model_imports_with_a_near_chance_warning(omniglot_root: Path, tmp_path: Path) -> None:
    from patternsearch import create_model

    torch.manual_seed(0)
    source = tmp_path / "random.pt"
    torch.save(create_model("conv4", 5, input_shape=(1, 28, 28)).state_dict(), source)
    result = import_checkpoint(source, tmp_path / "r.pt", ExperimentSpec(data_root=omniglot_root, device="cpu"),
                               inner_lr=1e-4, eval_steps=1, check_tasks=10)
    assert result.warning is not None and "near chance" in result.warning
