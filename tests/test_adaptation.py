from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

from patternsearch import Pattern, adapt, create_model, functional_forward, layer_groups, reference_adapt
from patternsearch.pattern import Phase

from .conftest import ResidualNet

aten = torch.ops.aten


def _support(seed: int = 0, channels: int = 1, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(10, channels, size, size, generator=generator), torch.arange(5).repeat(2)


def _max_relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)) for k in a)


def _random_patterns(groups: int, count: int, seed: int) -> list[Pattern]:
    """Single-phase patterns, then as many with up to three phases and learning-rate scales."""
    rng = random.Random(seed)

    def phase() -> Phase:
        return Phase(tuple(rng.random() < 0.5 for _ in range(groups)), rng.randint(1, 3),
                     rng.choice([0.25, 0.5, 1.0, 2.0, 3.5]))

    patterns = [Pattern(tuple(rng.random() < 0.5 for _ in range(groups)), rng.randint(1, 4)) for _ in range(count)]
    patterns += [Pattern.of_phases([phase() for _ in range(rng.randint(2, 3))]) for _ in range(count)]
    return patterns + [Pattern.full(groups, 3), Pattern((False,) * (groups - 1) + (True,), 2),
                       Pattern.of_phases([Phase((True,) * groups, 1), Phase((False,) * (groups - 1) + (True,), 3, 2)])]


def _tiny_conv4() -> nn.Module:
    torch.manual_seed(0)
    return create_model("conv4", num_classes=5, hidden=8)


@pytest.mark.parametrize("factory", [_tiny_conv4, lambda: (torch.manual_seed(0), ResidualNet())[1]],
                         ids=["conv4", "residual-groupnorm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adapt_matches_naive_reference_on_random_patterns(factory, dtype) -> None:
    """Same operations, same values. Large scaled steps amplify float32 rounding chaotically (a 1e-7
    difference in a first phase grows to 1e-4 over three more steps), so multi-phase patterns are checked
    in float64, where both sides agree to 1e-15."""
    model = factory().to(dtype)
    x, y = _support()
    x = x.to(dtype)
    for pattern in _random_patterns(len(layer_groups(model)), 12, seed=1):
        if dtype == torch.float32 and not pattern.is_single_phase:
            continue
        fast = adapt(model, x, y, pattern, inner_lr=0.3)
        slow = reference_adapt(model, x, y, pattern, inner_lr=0.3)
        assert _max_relative_error(fast, slow) < 1e-5, str(pattern)


def test_all_patterns_of_a_small_model_match_the_reference() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=1)
    x = torch.linspace(-5, 5, 10).unsqueeze(1)
    y = torch.sin(x)
    for flags in itertools.product([False, True], repeat=3):
        pattern = Pattern(flags, 3)
        fast = adapt(model, x, y, pattern, 0.01, F.mse_loss)
        slow = reference_adapt(model, x, y, pattern, 0.01, F.mse_loss)
        assert _max_relative_error(fast, slow) < 1e-5, str(pattern)


def test_frozen_parameters_keep_their_values_bit_for_bit_and_model_is_unchanged() -> None:
    model = _tiny_conv4()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _support()
    adapted = adapt(model, x, y, Pattern.parse("00101:3"), 0.4)
    groups = layer_groups(model)
    for group, flag in zip(groups, (False, False, True, False, True)):
        for name in group.params:
            changed = not torch.equal(adapted[name], before[name])
            assert changed == flag, name
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert not any(t.requires_grad for t in adapted.values())


def test_model_with_running_statistics_is_not_modified() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _support()
    adapt(model, x, y, Pattern.parse("11:2"), 0.1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_none_pattern_returns_the_meta_trained_parameters() -> None:
    model = _tiny_conv4()
    x, y = _support()
    adapted = adapt(model, x, y, Pattern.parse("11111:0"), 0.4)
    for name, param in model.named_parameters():
        assert torch.equal(adapted[name], param)


class _OpLog(TorchDispatchMode):
    """Records every aten call (forward and backward) that reaches the kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))

    def count(self, op: object) -> int:
        return sum(1 for func, _ in self.calls if func is op)

    def conv_backward_masks(self) -> list[list[bool]]:
        # output_mask = (grad_input, grad_weight, grad_bias); the weight shape tells the block.
        return [
            [int(args[2].shape[1])] + list(args[-1])
            for func, args in self.calls
            if func is aten.convolution_backward.default
        ]


def test_frozen_groups_skip_weight_gradients_backward_and_prefix_forward() -> None:
    model = create_model("conv4", num_classes=5, hidden=8, input_shape=(3, 28, 28))
    x, y = _support(channels=3)
    steps = 3
    with _OpLog() as fast:
        adapt(model, x, y, Pattern.parse(f"00101:{steps}"), 0.4)
    with _OpLog() as naive:
        reference_adapt(model, x, y, Pattern.parse(f"00101:{steps}"), 0.4)

    # Prefix (blocks 1-2) runs once; blocks 3-4 run at every step.
    assert fast.count(aten.convolution.default) == 2 + 2 * steps
    assert naive.count(aten.convolution.default) == 4 * steps
    # Backward stops at block 3: only blocks 3 and 4 have a convolution backward.
    masks = fast.conv_backward_masks()
    assert len(masks) == 2 * steps
    for _, grad_input, grad_weight, _ in masks:
        # Block 4 (frozen) needs grad_input only; block 3 (updated) needs the weight gradient only.
        assert (grad_input, grad_weight) in {(True, False), (False, True)}
    assert sum(1 for m in masks if m[2]) == steps  # one weight gradient per step: block 3's
    assert len(naive.conv_backward_masks()) == 4 * steps


def test_head_only_pattern_runs_the_body_once_and_no_conv_backward() -> None:
    model = _tiny_conv4()
    x, y = _support()
    with _OpLog() as log:
        adapt(model, x, y, Pattern.parse("00001:5"), 0.4)
    assert log.count(aten.convolution.default) == 4
    assert log.count(aten.convolution_backward.default) == 0


def test_head_phase_after_a_full_phase_runs_no_conv_backward() -> None:
    model = create_model("conv4", num_classes=5, hidden=8, input_shape=(3, 28, 28))
    x, y = _support(channels=3)
    with _OpLog() as log:
        adapt(model, x, y, Pattern.parse("11111:1+00001:4@2"), 0.4)
    # The full step: four convolutions forward, four backward; then the body runs once with the adapted
    # blocks, and the four head steps convolve nothing.
    assert log.count(aten.convolution.default) == 4 + 4
    assert len(log.conv_backward_masks()) == 4


def test_a_deeper_phase_runs_the_stages_it_freezes_once() -> None:
    model = create_model("conv4", num_classes=5, hidden=8, input_shape=(3, 28, 28))
    x, y = _support(channels=3)
    with _OpLog() as log:
        adapt(model, x, y, Pattern.parse("00011:2+00001:3+00100:1"), 0.4)
    # Blocks 1-2 are frozen in every phase: once. Phase 1: block 3 once, block 4 at each of 2 steps.
    # Phase 2: blocks 3-4 once, then head steps only. Phase 3 adapts block 3: blocks 3-4 at its step.
    assert log.count(aten.convolution.default) == 2 + (1 + 2) + 2 + 2
    masks = log.conv_backward_masks()
    assert len(masks) == 2 + 2  # block 4 in phase 1 (twice); blocks 4 and 3 in phase 3
    assert sum(1 for m in masks if m[2]) == 2 + 1  # weight gradients: block 4 twice, block 3 once


def test_non_sequential_model_truncates_backward_without_prefix_cache() -> None:
    model = ResidualNet(input_shape=(3, 28, 28))
    x, y = _support(channels=3)
    with _OpLog() as log:
        adapt(model, x, y, Pattern.parse("0010:2"), 0.4)
    masks = [m[1:] for m in log.conv_backward_masks()]
    # conv_b (updated): weight gradient only; stem and conv_a are never differentiated.
    assert masks == [[False, True, True]] * 2
    assert log.count(aten.convolution.default) == 3 * 2


def _naive_meta_gradient(model: nn.Module, pattern: Pattern, create_graph: bool) -> list[torch.Tensor]:
    """MAML's outer gradient, written out directly."""
    x, y = _support(0)
    xq, yq = _support(1)
    flagged = {n for g, f in zip(layer_groups(model), pattern.flags) if f for n in g.params}
    params = dict(model.named_parameters())
    for _ in range(pattern.steps):
        loss = F.cross_entropy(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
        params = {
            n: (p - 0.4 * (g if create_graph else g.detach()) if n in flagged else p)
            for (n, p), g in zip(params.items(), grads)
        }
    outer = F.cross_entropy(functional_call(model, params, (xq,)), yq)
    return list(torch.autograd.grad(outer, list(model.parameters())))


@pytest.mark.parametrize("second_order", [True, False], ids=["second-order", "first-order"])
@pytest.mark.parametrize("text", ["11111:2", "00111:2", "01011:1"])
def test_training_variant_meta_gradient_matches_naive(text: str, second_order: bool) -> None:
    model = _tiny_conv4()
    pattern = Pattern.parse(text)
    x, y = _support(0)
    xq, yq = _support(1)
    adapted = adapt(model, x, y, pattern, 0.4, params=dict(model.named_parameters()),
                    create_graph=second_order, first_order=not second_order)
    outer = F.cross_entropy(functional_call(model, adapted, (xq,)), yq)
    ours = torch.autograd.grad(outer, list(model.parameters()))
    naive = _naive_meta_gradient(model, pattern, create_graph=second_order)
    # Conv biases before batch norm have ~0 gradients, so compare the whole gradient vector.
    a, b = torch.cat([g.flatten() for g in ours]), torch.cat([g.flatten() for g in naive])
    assert float((a - b).norm() / b.norm()) < 1e-5


def test_second_order_differs_from_first_order() -> None:
    model = _tiny_conv4()
    pattern = Pattern.parse("11111:2")
    first = _naive_meta_gradient(model, pattern, create_graph=False)
    second = _naive_meta_gradient(model, pattern, create_graph=True)
    assert any(not torch.allclose(a, b) for a, b in zip(first, second))


def test_nan_loss_raises() -> None:
    model = _tiny_conv4()
    x, y = _support()
    with pytest.raises(FloatingPointError, match="inner learning rate"):
        adapt(model, x * float("nan"), y, Pattern.parse("00001:1"), 0.4)


def test_wrong_pattern_length_is_an_error() -> None:
    model = _tiny_conv4()
    x, y = _support()
    with pytest.raises(ValueError, match="3 flags but the model has 5"):
        adapt(model, x, y, Pattern.parse("011:1"), 0.4)


def test_pattern_text_and_none_alias_are_accepted() -> None:
    model = _tiny_conv4()
    x, y = _support()
    by_text = adapt(model, x, y, "00011:2", 0.4)
    by_pattern = adapt(model, x, y, Pattern.parse("00011:2"), 0.4)
    assert all(torch.equal(by_text[k], by_pattern[k]) for k in by_text)
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in adapt(model, x, y, "none", 0.4).items())
    with pytest.raises(ValueError, match="evaluation step count"):
        adapt(model, x, y, "full", 0.4)


class _ConvLayouts(TorchDispatchMode):
    """Records whether each convolution (forward) reads a channels-last input."""

    def __init__(self) -> None:
        super().__init__()
        self.channels_last: list[bool] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten.convolution.default:
            x = args[0]
            self.channels_last.append(x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last))
        return func(*args, **(kwargs or {}))


def test_adapt_and_functional_forward_convolve_plain_cpu_inputs_channels_last() -> None:
    """Ordinary NCHW tensors (one input channel, as Omniglot's) get the faster layout, so a user passing plain
    tensors adapts and predicts on the path the tool measures; values agree with the NCHW computation."""
    model = _tiny_conv4()
    x, y = _support()
    with _ConvLayouts() as log:
        params = adapt(model, x, y, Pattern.parse("00011:2"), 0.4)
        logits = functional_forward(model, params, x)
    assert log.channels_last and all(log.channels_last)
    plain = {k: v.contiguous() for k, v in params.items()}
    expected = functional_call(model, {**plain, **dict(model.named_buffers())}, (x,))
    assert torch.allclose(logits, expected, atol=1e-5)
    slow = reference_adapt(model, x, y, Pattern.parse("00011:2"), 0.4)
    assert _max_relative_error(params, slow) < 1e-5
    with _ConvLayouts() as log:
        functional_forward(model, adapt(model, x, y, "00011:2", 0.4, layout=False), x, layout=False)
    assert log.channels_last and not any(log.channels_last)  # as given: the plain loop's NCHW
