"""``patternsearch export``: one file that runs with torch alone and adapts like ``ps.adapt``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from patternsearch import Pattern, adapt, create_model, functional_forward, open_checkpoint
from patternsearch.cli import main
from patternsearch.deployment import (
    ExportError,
    compiler_present,
    export_adaptation,
    exported_pattern,
    load_export,
    trace_adapt_predict,
)
from patternsearch.errors import UsageError
from patternsearch.measurement import bench
from patternsearch.search import CONFIG_ATTR, SELECTION_ATTR, Selection, ValidationEvidence

from .conftest import dropout_bn_net

BLOCK_PATTERNSEARCH = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "patternsearch" or name.startswith("patternsearch."):
            raise ImportError("patternsearch is blocked in this process")
sys.meta_path.insert(0, _Refuse())
try:
    import patternsearch
except ImportError:
    pass
else:
    raise SystemExit("patternsearch imported")
"""


def _eager(model: nn.Module, pattern: Pattern, lr: float, loss_fn, task: tuple) -> torch.Tensor:
    params = adapt(model, task[0], task[1], pattern, lr, loss_fn)
    return functional_forward(model, params, task[2])


def _torch_alone(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` with ``python -I`` (no PYTHONPATH, no user site) from ``cwd``, patternsearch blocked."""
    return subprocess.run([sys.executable, "-I", "-c", BLOCK_PATTERNSEARCH + textwrap.dedent(script)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)




def _image_task(queries: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(5, 1, 8, 8, generator=generator), torch.arange(5),
            torch.randn(5 * queries, 1, 8, 8, generator=generator))


def test_a_phased_export_runs_with_torch_alone_and_matches_adapt(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    experiment = open_checkpoint(sinusoid_checkpoint, device="cpu")
    pattern = experiment.pattern("011:2@0.5+001:3")
    task = experiment.tasks("test", 1, 3)[0]
    sample = (task.x_support, task.y_support, task.x_query)
    out = tmp_path / "adapter.pt2"
    written = export_adaptation(experiment.model, pattern, experiment.inner_lr, experiment.benchmark.loss_fn,
                                sample, out, kind="program")
    assert written.kind == "program" and written.max_difference is not None and written.max_difference <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.pt2"]  # no temporary file left beside it
    assert exported_pattern(out) == "011:2@0.5+001:3"
    torch.save({"inputs": sample, "expected": _eager(experiment.model, pattern, experiment.inner_lr,
                                                     experiment.benchmark.loss_fn, sample)}, tmp_path / "io.pt")
    alone = tmp_path / "alone"
    alone.mkdir()
    result = _torch_alone(f"""
        import torch
        adapter = torch.export.load({str(out)!r}).module()
        io = torch.load({str(tmp_path / 'io.pt')!r})
        got = adapter(*io["inputs"])
        print(float((got - io["expected"]).abs().max()))
        try:
            adapter(io["inputs"][0][:3], io["inputs"][1][:3], io["inputs"][2])
        except Exception as error:
            print("refused:", str(error).strip())
        """, alone)
    assert result.returncode == 0, result.stderr
    difference, refusal = result.stdout.strip().splitlines()
    assert float(difference) <= 1e-4
    assert refusal.startswith("refused:") and "x_support" in refusal and "5" in refusal


def _calls(graph: torch.fx.GraphModule, op: object) -> list[torch.fx.Node]:
    return [node for node in graph.graph.nodes if node.op == "call_function" and node.target == op]


def test_the_traced_adaptation_keeps_the_patterns_savings() -> None:
    model = create_model("conv4", 5, input_shape=(1, 28, 28)).train()
    task = (torch.randn(5, 1, 28, 28), torch.arange(5), torch.randn(10, 1, 28, 28))
    loss = nn.functional.cross_entropy
    conv, backward = torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default
    # block2 and the head adapt: block1 is the frozen prefix (once), block3-4 frozen but on the gradient's path.
    graph = trace_adapt_predict(model, Pattern.parse("01001:2"), 0.4, loss, task)
    masks = [tuple(node.args[-1]) for node in _calls(graph, backward)]
    assert len(_calls(graph, conv)) == 1 + 3 * 2 + 4  # prefix once, three blocks per step, predict
    assert masks == [(True, False, False), (True, False, False), (False, True, True)] * 2  # no weight grads
    # for frozen block4 and block3; block2's backward stops: no gradient for its input
    full = trace_adapt_predict(model, Pattern.parse("11111:2"), 0.4, loss, task)
    assert len(_calls(full, conv)) == 4 * 2 + 4 and len(_calls(full, backward)) == 4 * 2
    head_only = trace_adapt_predict(model, Pattern.parse("00001:2"), 0.4, loss, task)
    assert len(_calls(head_only, conv)) == 4 + 4 and not _calls(head_only, backward)


def test_a_users_model_with_dropout_and_running_statistics_exports(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = dropout_bn_net(4).eval()  # running statistics, dropout off: deterministic
    model[1].running_mean.add_(0.5)
    pattern = Pattern.parse("011:3@2")
    task = _image_task()
    written = export_adaptation(model, pattern, 0.1, nn.functional.cross_entropy, task, tmp_path / "eval.pt2",
                                kind="program")
    got = load_export(written.path)(*task)
    assert (got - _eager(model, pattern, 0.1, nn.functional.cross_entropy, task)).abs().max() <= 1e-4
    model.train()  # dropout on: adaptation is random, so outputs are not compared
    monkeypatch.setattr("patternsearch.deployment._export.compiler_present", lambda device: False)
    random = export_adaptation(model, pattern, 0.1, nn.functional.cross_entropy, task, tmp_path / "train.pt2")
    assert random.max_difference is None and load_export(random.path)(*task).shape == (15, 5)
    assert random.kind == "program" and "no C++ compiler" in random.note  # what auto does without one


class _Branchy(nn.Module):
    """Data-dependent control flow: cannot be traced."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_bad_models_and_paths_are_refused_in_one_line_before_the_build(tmp_path: Path) -> None:
    task = (torch.randn(5, 4), torch.arange(5), torch.randn(10, 4))
    with pytest.raises(ExportError, match="cannot trace the adaptation of _Branchy") as refused:
        export_adaptation(_Branchy(), Pattern.parse("1:1"), 0.1, nn.functional.cross_entropy, task,
                          tmp_path / "a.pt2", kind="program")
    assert "\n" not in str(refused.value) and not (tmp_path / "a.pt2").exists()
    locked, folder = tmp_path / "locked", tmp_path / "folder.pt2"
    locked.mkdir(mode=0o500)
    folder.mkdir()
    net = nn.Linear(4, 5)
    for path, message in ((tmp_path / "a.onnx", "must end in .pt2"), (tmp_path / "no" / "a.pt2", "does not exist"),
                          (folder, "is a folder"), (locked / "a.pt2", "permission denied")):
        if message == "permission denied" and os.geteuid() == 0:
            continue  # root writes anywhere
        start = time.perf_counter()
        with pytest.raises(ExportError, match=message):
            export_adaptation(net, Pattern.parse("1:1"), 0.1, nn.functional.cross_entropy, task, path)
        assert time.perf_counter() - start < 1.0


@pytest.mark.skipif(not compiler_present(torch.device("cpu")), reason="no C++ compiler")
def test_an_aoti_package_matches_and_refuses_other_shapes_in_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    pattern = Pattern.parse("01:2@0.5+11:1")
    task = (torch.randn(5, 1), torch.randn(5, 1), torch.randn(10, 1))
    written = export_adaptation(model, pattern, 0.01, nn.functional.mse_loss, task, tmp_path / "aoti.pt2", kind="aoti")
    assert written.kind == "aoti" and written.max_difference is not None and written.max_difference <= 1e-4
    assert exported_pattern(written.path) == "01:2@0.5+11:1"
    adapter = load_export(written.path)
    assert (adapter(*task) - _eager(model, pattern, 0.01, nn.functional.mse_loss, task)).abs().max() <= 1e-4
    with pytest.raises(RuntimeError, match="unmatched dim value at 0, expected: 5, but got: 3") as refused:
        adapter(task[0][:3], task[1][:3], task[2])
    assert len(str(refused.value).strip().splitlines()) == 1
    program = torch.export.load(written.path).module()  # the same file, where the compiled library cannot run
    assert (program(*task) - adapter(*task)).abs().max() <= 1e-4


def test_the_command_exports_the_stored_select_answer(sinusoid_checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="answered", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr(CONFIG_ATTR, {"benchmark": "sinusoid"})
    answer = Selection("011:1@0.5+001:2", "111:10", 0.01, 0.95, True, "test", ValidationEvidence(),
                       checkpoint=str(sinusoid_checkpoint))
    study.set_user_attr(SELECTION_ATTR, answer.to_dict())
    out = tmp_path / "adapter.pt2"
    assert main(["export", str(out), "--storage", storage, "--kind", "program", "--queries", "4"]) == 0
    printed = capsys.readouterr().out
    assert "011:1@0.5+001:2" in printed and "'patternsearch select' on study 'answered'" in printed
    assert "x_query [4, 1]" in printed and out.is_file()
    bare = optuna.create_study(study_name="bare", storage=storage)
    bare.set_user_attr(CONFIG_ATTR, {"benchmark": "sinusoid"})
    assert main(["export", str(tmp_path / "b.pt2"), "--storage", storage, "--study", "bare"]) == 2
    refusal = capsys.readouterr().err
    assert len(refusal.strip().splitlines()) == 1 and "holds no answer" in refusal


def test_bench_times_an_export_beside_the_patterns(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    experiment = open_checkpoint(sinusoid_checkpoint, device="cpu")
    tasks = experiment.tasks("val", 2, 0)
    task = tasks[0]
    out = tmp_path / "adapter.pt2"
    export_adaptation(experiment.model, experiment.pattern("001:3"), experiment.inner_lr, experiment.benchmark.loss_fn,
                      (task.x_support, task.y_support, task.x_query), out, kind="program")
    rows = {row.name: row for row in bench(experiment, [experiment.pattern("001:3")], tasks, repeats=1, warmup=0,
                                           exports=[out])}
    exported = rows["export adapter.pt2"]
    assert exported.pattern == "001:3" and exported.adapt_predict_ms > 0 and exported.latency_ms is None
    assert exported.accuracy == pytest.approx(rows["001:3"].accuracy, abs=1e-4)  # the same adaptation
    other = experiment.tasks("val", 1, 0)[0]
    short = dataclasses.replace(other, x_support=other.x_support[:3], y_support=other.y_support[:3])
    with pytest.raises(UsageError, match="does not take these tasks") as refused:
        bench(experiment, [], [short], repeats=1, warmup=0, exports=[out])
    assert "\n" not in str(refused.value)
