"""The deployed adapter predicts what ``adapt`` + ``functional_forward`` predict, on the path it says it runs.

Eager adapters run the same operations as ``adapt`` and agree to 1e-6; compiled ones run other kernels
(fused by the compiler), and agree to 1e-4 in the logits and in every prediction. Compilation is slow, so
one test compiles, on a tiny model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from patternsearch import DeployedAdapter, Pattern, adapt, create_model, functional_forward
from patternsearch.deployment import compile_options, compiler_present

from .conftest import ResidualNet


def _task(seed: int = 0, size: int = 28, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2 * classes, 1, size, size, generator=generator), torch.arange(classes).repeat(2),
            torch.randn(3 * classes, 1, size, size, generator=generator))


class _DropoutNet(nn.Module):
    """A user model with dropout and batch norm that tracks running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4 * 7 * 7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.body(x).flatten(1)))


def _expected(model: nn.Module, pattern: str, x: torch.Tensor, y: torch.Tensor, query: torch.Tensor,
              seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    params = adapt(model, x, y, pattern, 0.4)
    with torch.no_grad():
        return functional_forward(model, params, query)


@pytest.mark.parametrize("factory, pattern", [
    (lambda: create_model("conv4", num_classes=5, hidden=8), "00011:2"),
    (lambda: create_model("conv4", num_classes=5, hidden=8), "11111:1+00001:3"),
    (ResidualNet, "0101:2"),
    (_DropoutNet, "01:2"),
], ids=["conv4", "conv4-phases", "residual", "dropout-running-stats"])
def test_eager_adapter_predicts_what_adapt_and_functional_forward_predict(factory, pattern: str) -> None:
    """The dropout model is random in train mode: with the same seed both draw the same masks."""
    torch.manual_seed(0)
    model = factory()
    x, y, query = _task()
    adapter = DeployedAdapter(model, pattern, 0.4, example=(x, y, query), compiled=False)
    assert adapter.path.layout == "channels-last" and adapter.path.adapt == adapter.path.predict == "eager"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    logits = adapter(x, y, query)
    assert torch.allclose(logits, _expected(model, pattern, x, y, query, seed=1), atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # running statistics untouched


def test_compiled_adapter_matches_eager_and_dropout_stays_eager() -> None:
    if not compiler_present(torch.device("cpu")):
        pytest.skip("no C++ compiler for torch.compile")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 5))
    x, y, query = _task(size=8)
    pattern = Pattern.parse("101:1+001:2")  # a deeper second phase: its middle stages run once
    adapter = DeployedAdapter(model, pattern, 0.4, example=(x, y, query), compiled=True)
    assert (adapter.path.adapt, adapter.path.predict) == ("compiled", "compiled"), adapter.path
    for seed in (1, 2):
        x, y, query = _task(seed, size=8)
        logits = adapter(x, y, query)
        expected = _expected(model, str(pattern), x, y, query, seed)
        assert torch.allclose(logits, expected, atol=1e-4)
        assert torch.equal(logits.argmax(1), expected.argmax(1))

    random = DeployedAdapter(_DropoutNet(), "01:1", 0.4, example=_task(), compiled=True)
    assert random.path.adapt == random.path.predict == "eager" and "dropout" in (random.path.note or "")


def test_a_model_the_compiler_fails_on_deploys_eager_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported")

    monkeypatch.setattr(torch, "compile", fail)
    monkeypatch.setattr("patternsearch.deployment._adapter.compiler_present", lambda device: True)
    torch.manual_seed(0)
    model = create_model("conv4", num_classes=5, hidden=8)
    x, y, query = _task()
    adapter = DeployedAdapter(model, "00011:2", 0.4, example=(x, y, query), compiled=True)
    assert adapter.path.adapt == adapter.path.predict == "eager"
    assert adapter.path.note == "compilation failed (RuntimeError): eager"
    assert torch.allclose(adapter(x, y, query), _expected(model, "00011:2", x, y, query, seed=0), atol=1e-6)


def test_small_models_are_not_compiled_and_cuda_uses_cuda_graphs() -> None:
    """Compiling a forward pass that takes microseconds does not pay; CUDA replays graphs (reduce-overhead)."""
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=1)
    x, query = torch.randn(5, 1), torch.randn(10, 1)
    adapter = DeployedAdapter(model, "001:2", 0.01, loss_fn=nn.functional.mse_loss, example=(x, torch.sin(x), query))
    assert adapter.path.predict == "eager" and adapter.path.layout == "as given"
    assert "pay" in (adapter.path.note or "") or "compiler" in (adapter.path.note or "")
    assert DeployedAdapter(model, "001:2", 0.01).path.note == "no example inputs to compile for"
    assert compile_options(torch.device("cuda")) == {"dynamic": False, "mode": "reduce-overhead"}
    assert "mode" not in compile_options(torch.device("cpu"))
    assert not compiler_present(torch.device("meta"))
