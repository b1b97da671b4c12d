import pytest

from patternsearch import Pattern
from patternsearch.pattern import PatternError


@pytest.mark.parametrize("text", ["11111:5", "00011:5", "10101:0", "1:1", "0000000001:12", "11111:1+00011:4",
                                  "00010:2@2", "11111:1@0.5+00001:3@4", "01:1@0.125+10:2@3e-05", "1:1@1e16"])
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


@pytest.mark.parametrize(("text", "bad"), [
    ("11111:1+0011:4", "different numbers of group flags"),
    ("11111:1+00x11:4", "'00x11:4'"),
    ("11111:1+", "''"),
    ("11111:1@0+00011:4", "positive number, got 0.0"),
    ("11111:1@-2", "positive number"),
    ("11111:1@inf", "positive number"),
    ("11111:1@two", "malformed scale 'two'"),
    ("11111:1@2@3", "'11111:1@2@3'"),
])
def test_a_bad_phase_is_named(text: str, bad: str) -> None:
    with pytest.raises(PatternError, match=bad.replace("+", r"\+")):
        Pattern.parse(text)


def test_phases_steps_flags_and_scales() -> None:
    pattern = Pattern.parse("11100:1@0.5+00011:4")
    assert pattern.steps == 5
    assert pattern.flags == (True,) * 5  # groups adapted in some phase
    assert pattern.first_updated == 0
    assert [(str(p), p.steps, p.scale) for p in pattern.phases] == [("11100:1@0.5", 1, 0.5), ("00011:4", 4, 1.0)]
    assert not pattern.is_single_phase
    assert Pattern.parse("00011:4@1").is_single_phase
    assert Pattern.parse("00011:4@1") == Pattern.parse("00011:4")
    assert str(Pattern.parse("00011:4@1")) == "00011:4"


def test_canonical_form_of_phases() -> None:
    merged = Pattern.parse("00011:2+00011:3+00000:4+11111:0+00001:1@2+00001:2@2")
    assert str(merged.canonical()) == "00011:5+00001:3@2"
    assert merged == Pattern.parse("00011:5+00001:3@2")
    assert hash(merged) == hash(Pattern.parse("00011:5+00001:3@2"))
    assert Pattern.parse("00011:2+00011:3") == Pattern.parse("00011:5")
    assert Pattern.parse("00011:2@2+00011:3") != Pattern.parse("00011:5")  # other scale: another pattern
    assert Pattern.parse("00011:1+00001:1") != Pattern.parse("00001:1+00011:1")  # order matters
    assert Pattern.parse("00000:3+00000:1@4") == Pattern.none(5)
    assert Pattern.parse("00000:3+00000:1@4").is_none


def test_truncated_and_remaining_split_the_trajectory() -> None:
    pattern = Pattern.parse("11111:1+00011:4@2")
    assert pattern.truncated(1) == Pattern.parse("11111:1")
    assert pattern.truncated(3) == Pattern.parse("11111:1+00011:2@2")
    assert pattern.truncated(0) == Pattern.none(5)
    assert pattern.truncated(9) == pattern
    assert [str(p) for p in pattern.remaining(0)] == ["11111:1", "00011:4@2"]
    assert [str(p) for p in pattern.remaining(2)] == ["00011:3@2"]
    assert pattern.remaining(5) == ()


def test_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(PatternError, match="4 flags but the model has 5 layer groups"):
        Pattern.parse("0011:5", num_groups=5)
