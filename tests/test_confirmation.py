"""Unit tests of the selection rule: the graphical procedures, the winner's-curse correction, the reasons."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from patternsearch.confirmation import (
    ANCHOR_SHARE,
    CandidateTest,
    Proposal,
    confirm_in_sequence,
    fallback_graph,
    fixed_sequence_graph,
    graphical_test,
    holm_graph,
    propose,
)
from patternsearch.uncertainty import Estimate, TaskDesign

D, ALPHA = 0.01, 0.05
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _with_p_value(p: float, standard_error: float = 0.003) -> Estimate:
    """A paired difference whose non-inferiority p-value (H0: loss >= D) is ``p``."""
    return Estimate(-D + float(stats.norm.isf(p)) * standard_error, standard_error, 1e9, 600, None, None)


def _confirmed(p_values: list[float], graph_of) -> list[bool]:  # type: ignore[no-untyped-def]
    confirmed, _ = graphical_test([_with_p_value(p) for p in p_values], graph_of(len(p_values)),
                                  max_degradation=D, alpha=ALPHA)
    return confirmed.tolist()


def test_fixed_sequence_tests_slowest_first_and_stops_at_the_first_failure() -> None:
    assert _confirmed([0.001, 0.2, 0.04], fixed_sequence_graph) == [False, False, True]
    assert _confirmed([0.001, 0.01, 0.2], fixed_sequence_graph) == [False, False, False]


def test_holm_matches_the_textbook_step_down() -> None:
    assert _confirmed([0.03, 0.012, 0.04], holm_graph) == [False, True, False]  # 0.012 <= 0.05/3; 0.03 > 0.05/2
    assert _confirmed([0.024, 0.012, 0.04], holm_graph) == [True, True, True]


def test_fallback_goes_on_after_a_failure_and_passes_levels_toward_faster_candidates() -> None:
    graph = fallback_graph(3, 0.6)
    assert graph.weights.tolist() == pytest.approx([0.2, 0.2, 0.6]) and graph.weights.sum() == pytest.approx(1.0)
    assert fallback_graph(5).weights.tolist() == pytest.approx([(1 - ANCHOR_SHARE) / 4] * 4 + [ANCHOR_SHARE])
    # The anchor (0.6 * 5% = 3%) fails; the fastest still passes at its own 1%.
    assert _confirmed([0.005, 0.2, 0.5], lambda m: fallback_graph(m, 0.6)) == [True, False, False]
    # The anchor passes its 3% to the middle one (1% + 3% = 4%), then that one its 4% to the fastest.
    confirmed, levels = graphical_test([_with_p_value(p) for p in (0.045, 0.035, 0.02)], graph,
                                       max_degradation=D, alpha=ALPHA)
    assert confirmed.tolist() == [True, True, True] and levels.tolist() == pytest.approx([0.05, 0.04, 0.03])
    assert fallback_graph(1).weights.tolist() == [1.0]  # one candidate: the whole level


@dataclass(frozen=True)
class _Normal:
    """A normally distributed difference with known standard error (a fast stand-in for :class:`Estimate`)."""

    mean: float
    standard_error: float

    def lower_bound(self, confidence: float) -> float:
        return self.mean - NormalDist().inv_cdf(confidence) * self.standard_error


def _familywise_error(losses: list[float], correlation: float, graph_of, runs: int = 3000) -> float:  # type: ignore[no-untyped-def]
    """Monte Carlo family-wise error with equicorrelated normal statistics and standard error D/3."""
    rng = np.random.default_rng(0)
    m, error = len(losses), D / 3
    shared = rng.normal(size=(runs, 1)) * np.sqrt(correlation)
    means = -np.asarray(losses) * D + error * (shared + rng.normal(size=(runs, m)) * np.sqrt(1 - correlation))
    null = np.asarray(losses) >= 1.0
    wrong = 0
    for row in means:
        confirmed, _ = graphical_test([_Normal(float(x), error) for x in row], graph_of(m),  # type: ignore[misc]
                                      max_degradation=D, alpha=ALPHA)
        wrong += bool((confirmed & null).any())
    return wrong / runs


@pytest.mark.parametrize("losses", [[1.0] * 5, [1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 1.0]])
@pytest.mark.parametrize("correlation", [0.0, 0.9])
def test_fallback_controls_the_familywise_error_in_least_favourable_configurations(
        losses: list[float], correlation: float) -> None:
    # 3000 runs: standard error 0.4 points at 5%.
    assert _familywise_error(losses, correlation, fallback_graph) <= ALPHA + 0.012


def _proposal(pattern: str, speedup: float, difference: float, error: float = 0.002, tasks: int = 200,
              seed: int = 0) -> Proposal:
    """A proposal whose per-task validation differences have mean ``difference`` and standard error ``error``."""
    noise = np.random.default_rng(seed).normal(size=tasks)
    per_task = difference + (noise - noise.mean()) / noise.std(ddof=1) * error * np.sqrt(tasks)
    return Proposal(pattern, speedup, difference, per_task)


def test_the_top_of_a_crowd_of_similar_patterns_is_pulled_down_an_isolated_one_is_not() -> None:
    crowd = list(np.random.default_rng(1).normal(-0.01, 0.002, 60))  # many patterns compared, noise 0.002
    winner = _proposal("winner", 10.0, max(crowd) + 0.001)
    isolated = _proposal("isolated", 2.0, 0.01)
    candidates = propose([winner, isolated], TaskDesign.none(), max_degradation=D, confidence=0.95,
                         max_candidates=5, compared=[*crowd, winner.val_difference, isolated.val_difference])
    by_pattern = {c.pattern: c for c in candidates}
    assert by_pattern["isolated"].val_corrected == pytest.approx(0.01, abs=1e-5)
    assert "winner" not in by_pattern  # corrected toward the crowd (-1 point), its bound is below -D
    kept = propose([winner], TaskDesign.none(), max_degradation=D, confidence=0.95, max_candidates=5)
    assert kept[0].val_corrected == pytest.approx(winner.val_difference)  # nothing compared: no correction


def test_the_candidates_run_from_the_fastest_plausible_to_the_most_reliable() -> None:
    proposals = [_proposal(f"p{i}", 20.0 - i, -0.006 + 0.0005 * i, seed=i) for i in range(12)]
    proposals.append(_proposal("slower but worse", 5.0, -0.004))  # less reliable than faster ones: dropped
    proposals.append(_proposal("beyond", 30.0, -0.012))  # its lower bound is below -D: dropped
    candidates = propose(proposals, TaskDesign.none(), max_degradation=D, confidence=0.95, max_candidates=5)
    names = [c.pattern for c in candidates]
    assert names[0] == "p0" and names[-1] == "p11" and len(names) == 5  # both ends, spread between
    assert [c.val_speedup for c in candidates] == sorted((c.val_speedup for c in candidates), reverse=True)
    bounds = [c.val_lower_bound for c in candidates]
    assert bounds == sorted(bounds) and bounds[0] >= -D


def test_without_per_task_differences_proposals_stand_on_their_point_estimates() -> None:
    proposals = [Proposal("a", 9.0, -0.005, np.empty(0)), Proposal("b", 4.0, -0.02, np.empty(0))]
    candidates = propose(proposals, TaskDesign.none(), max_degradation=D, confidence=0.95, max_candidates=5)
    assert [c.pattern for c in candidates] == ["a"]


def _candidates(*names: str) -> list[CandidateTest]:
    return [CandidateTest(name, None, None, None) for name in names]


def test_the_reason_says_what_happened() -> None:
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.02, 300)
    differences = {"fast": noise - 0.05, "slow": noise - 0.0}
    decision = confirm_in_sequence(_candidates("fast", "slow"), lambda c: differences[c.pattern], TaskDesign.none(),
                                   max_degradation=D, confidence=0.95)
    assert decision.selected is not None and decision.selected.pattern == "slow"
    assert decision.reason.startswith("slow is the fastest of 1 confirmed candidates out of 2 (fallback")
    assert "not confirmed, though faster: fast (" in decision.reason
    assert decision.candidates[1].level == pytest.approx(ANCHOR_SHARE * 0.05)
    decision = confirm_in_sequence(_candidates("fast"), lambda c: differences[c.pattern], TaskDesign.none(),
                                   max_degradation=D, confidence=0.95)
    assert decision.selected is None and decision.candidates[0].level == pytest.approx(0.05)
    assert decision.reason.startswith("none of the 1 candidates was confirmed") and "baseline" in decision.reason
    assert "no pattern faster than the baseline" in confirm_in_sequence(
        [], lambda c: differences[c.pattern], TaskDesign.none(), max_degradation=D, confidence=0.95).reason


def test_the_power_example_runs_quick_and_its_procedure_keeps_the_error_rate() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "selection_power.py"), "--quick", "--json"],
                         check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout)
    assert {"runs", "seed", "procedures", "shipped", "fronts", "least_favourable"} <= set(result)
    assert result["shipped"] in result["procedures"] and "fixed sequence" in result["procedures"]
    for numbers in [*result["fronts"].values(), *result["least_favourable"].values()]:
        assert set(result["procedures"]) <= set(numbers)
        assert {"selects_within_d", "mean_speedup", "familywise_error"} <= set(numbers[result["shipped"]])
    for numbers in result["least_favourable"].values():
        assert numbers[result["shipped"]]["familywise_error"] <= 0.075
