import pytest
from torch import nn

from patternsearch import create_model, layer_groups
from patternsearch.groups import GroupingError

from .conftest import ResidualNet


def test_conv4_has_five_groups_norm_merged() -> None:
    groups = layer_groups(create_model("conv4", num_classes=5))
    assert len(groups) == 5
    assert groups[0].params == ("block1.conv.weight", "block1.conv.bias", "block1.norm.weight", "block1.norm.bias")
    assert groups[-1].params == ("head.weight", "head.bias")


def test_every_parameter_in_exactly_one_group() -> None:
    for model in (create_model("conv4", 5), create_model("mlp", 1), ResidualNet()):
        names = [p for g in layer_groups(model) for p in g.params]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters())


def test_residual_groupnorm_grouping() -> None:
    assert [g.name for g in layer_groups(ResidualNet())] == ["stem", "conv_a", "conv_b", "head"]


def test_shared_module_is_grouped_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
    groups = layer_groups(model)
    assert [g.params for g in groups] == [("0.weight", "0.bias"), ("3.weight", "3.bias")]


class CustomGrouped(nn.Sequential):
    def __init__(self, names: list[tuple[str, list[str]]]) -> None:
        super().__init__(nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 1))
        self._names = names

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        return self._names


def test_model_defined_grouping() -> None:
    model = CustomGrouped([("body", ["0.weight", "0.bias", "1.weight", "1.bias"]), ("head", ["2.weight", "2.bias"])])
    assert [g.name for g in layer_groups(model)] == ["body", "head"]


def test_invalid_custom_grouping_is_refused() -> None:
    with pytest.raises(GroupingError, match="in no layer group: 2.weight"):
        layer_groups(CustomGrouped([("all", ["0.weight", "0.bias", "1.weight", "1.bias", "2.bias"])]))
    with pytest.raises(GroupingError, match="groups 'a' and 'b'"):
        layer_groups(CustomGrouped([("a", ["0.weight"]), ("b", ["0.weight"])]))
