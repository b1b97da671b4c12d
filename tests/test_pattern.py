import pytest

from patternsearch import Pattern
from patternsearch.pattern import PatternError


@pytest.mark.parametrize("text", ["11111:5", "00011:5", "10101:0", "1:1", "0000000001:12"])
def test_str_round_trips(text: str) -> None:
    assert str(Pattern.parse(text)) == text


def test_flags_and_steps() -> None:
    pattern = Pattern.parse("00011:5")
    assert pattern.flags == (False, False, False, True, True)
    assert pattern.steps == 5
    assert pattern.first_updated == 3


def test_aliases_resolve_with_model_facts() -> None:
    assert Pattern.parse("full", num_groups=5, full_steps=10) == Pattern.parse("11111:10")
    assert str(Pattern.parse("none", num_groups=3)) == "000:0"
    with pytest.raises(PatternError, match="needs a model"):
        Pattern.parse("full")
    with pytest.raises(PatternError, match="evaluation step count"):
        Pattern.parse("full", num_groups=5)


def test_canonical_form_no_adaptation_patterns_are_equal() -> None:
    none = Pattern.none(5)
    assert Pattern.parse("11111:0") == none
    assert Pattern.parse("00000:7") == none
    assert hash(Pattern.parse("00000:7")) == hash(none)
    assert str(Pattern.parse("01100:0").canonical()) == "00000:0"
    assert Pattern.parse("01100:2") != Pattern.parse("01100:3")


@pytest.mark.parametrize("text", ["", "11111", "1121:3", "abc:1", "11:-1", "11:x", ":3", "11:2:3"])
def test_malformed_text_is_a_clear_error(text: str) -> None:
    with pytest.raises(PatternError):
        Pattern.parse(text)


def test_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(PatternError, match="4 flags but the model has 5 layer groups"):
        Pattern.parse("0011:5", num_groups=5)
