"""Unit tests of the selection rule: the graphical procedures, the winner's-curse correction, the reasons."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from scipy import integrate, stats

from patternsearch.confirmation import (
    ANCHOR_SHARE,
    CandidateTest,
    Graph,
    IntersectionLevels,
    Proposal,
    closed_test,
    confirm_in_sequence,
    fallback_graph,
    fixed_sequence_graph,
    graphical_test,
    group_variance,
    holm_graph,
    intersection_weights,
    new_group_gap,
    p_value,
    pick_candidates,
    power_graph,
    predicted_power,
    predicted_speedup,
    propose,
    statistic_correlation,
    validation_front,
)
from patternsearch.errors import AdaptationDiverged
from patternsearch.uncertainty import Estimate, TaskDesign, estimate

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


def _equicorrelated(m: int, correlation: float) -> np.ndarray:
    matrix = np.full((m, m), correlation)
    np.fill_diagonal(matrix, 1.0)
    return matrix


def test_intersection_weights_pass_the_missing_candidates_levels_on() -> None:
    graph = fallback_graph(5)
    for mask in range(1, 32):
        members = np.array([(mask >> i) & 1 for i in range(5)], dtype=bool)
        weights = intersection_weights(graph, members)
        assert weights.sum() == pytest.approx(1.0) and not weights[~members].any()
    # Without the anchor (40%), the next faster one gets it (15% + 40%); without the fastest, the anchor.
    assert intersection_weights(graph, np.array([1, 1, 1, 1, 0], dtype=bool)).tolist() == pytest.approx(
        [0.15, 0.15, 0.15, 0.55, 0.0])
    assert intersection_weights(graph, np.array([0, 1, 1, 1, 1], dtype=bool)).tolist() == pytest.approx(
        [0.0, 0.15, 0.15, 0.15, 0.55])
    assert intersection_weights(holm_graph(4), np.array([1, 0, 1, 1], dtype=bool)).tolist() == pytest.approx(
        [1 / 3, 0.0, 1 / 3, 1 / 3])


def test_p_value_is_the_level_at_which_the_bound_reaches_minus_d() -> None:
    assert p_value(_with_p_value(0.0123), D) == pytest.approx(0.0123, rel=1e-6)
    assert p_value(_with_p_value(0.7), D) == 1.0  # not even at 50%
    skewed = Estimate(-0.002, 0.003, 40.0, 600, None, None, skewness=-0.8)
    assert skewed.lower_bound(1.0 - p_value(skewed, D)) == pytest.approx(-D, abs=1e-9)


def test_the_parametric_closed_test_uses_the_correlation_bonferroni_cannot() -> None:
    estimates = [_with_p_value(p) for p in (0.03, 0.012, 0.04)]
    graph = fallback_graph(3)

    def test(correlation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return closed_test(estimates, IntersectionLevels(graph, ALPHA, correlation), max_degradation=D)

    bonferroni, independent = test(None)[0], test(_equicorrelated(3, 0.0))[0]
    assert bonferroni.tolist() == independent.tolist() == [False, True, False]
    correlated, levels = test(_equicorrelated(3, 0.5))
    assert correlated.tolist() == [True, True, True] and levels.tolist() == pytest.approx([ALPHA] * 3)
    # Perfectly correlated equal-weight statistics are one test: c = 2, each candidate at the whole level.
    assert IntersectionLevels(holm_graph(2), ALPHA, _equicorrelated(2, 1.0)).of(0b11).tolist() == pytest.approx(
        [ALPHA] * 2, rel=0.05)
    assert IntersectionLevels(holm_graph(2), ALPHA, None).of(0b11).tolist() == pytest.approx([ALPHA / 2] * 2)


def _two_sided_union(levels: np.ndarray, correlation: float) -> float:
    """P(either of two jointly normal statistics passes at its level): the exact error of an intersection of two."""
    z1, z2 = stats.norm.isf(levels)
    spread = math.sqrt(1.0 - correlation**2)
    both, _ = integrate.quad(lambda x: stats.norm.pdf(x) * stats.norm.sf((z2 - correlation * x) / spread), z1, np.inf)
    return float(levels.sum() - both)


@pytest.mark.parametrize("correlation", [0.0, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("alpha", [1e-6, 1e-5, 1.2e-5, 3e-5])
def test_parametric_levels_too_small_for_the_draws_to_resolve_spend_no_more_than_the_level(
        alpha: float, correlation: float) -> None:
    # A ninth to twelfth look at 0.95, or --confidence 0.9999, asks for such levels: the fixed draws hold
    # fewer than a few below them, and their minimum is no quantile (it gave 2-2.4 times the level).
    levels = IntersectionLevels(holm_graph(2), alpha, _equicorrelated(2, correlation)).of(0b11)
    assert _two_sided_union(levels, correlation) <= alpha * (1.0 + 1e-9)
    # Where the draws resolve the level they still give parametric levels above Bonferroni's.
    resolved = IntersectionLevels(holm_graph(2), 0.05, _equicorrelated(2, 0.8)).of(0b11)
    assert resolved.sum() > 0.05 * 1.05 and _two_sided_union(resolved, 0.8) <= 0.05 * 1.01


def test_the_parametric_closed_test_confirms_everything_bonferroni_does_and_says_why() -> None:
    rng = np.random.default_rng(4)
    graph = fallback_graph(4)
    for _ in range(40):
        estimates = [_with_p_value(p) for p in rng.uniform(0.0, 0.08, 4)]
        bonferroni, _ = graphical_test(estimates, graph, max_degradation=D, alpha=ALPHA)
        levels = IntersectionLevels(graph, ALPHA, _equicorrelated(4, float(rng.uniform(0.0, 0.9))))
        parametric, decisive = closed_test(estimates, levels, max_degradation=D)
        assert not (bonferroni & ~parametric).any()
        # The level shown with each candidate explains its decision: its bound there passes iff it is confirmed.
        passes = [e.lower_bound(1.0 - a) >= -D for e, a in zip(estimates, decisive, strict=True)]
        assert passes == parametric.tolist()


def test_the_correlation_of_the_means_counts_the_units_as_the_means_do() -> None:
    # Two candidates sharing the baseline's task noise but with independent unit effects: per task they
    # correlate through the baseline, their means hardly (the unit effects dominate the means' variance).
    rng = np.random.default_rng(6)
    units = rng.integers(0, 12, size=(600, 1))
    design = TaskDesign(tuple(map(tuple, units.tolist())), tuple(map(tuple, units.tolist())))
    baseline = rng.normal(0, 0.03, 600)
    effects = rng.normal(0, 0.02, (2, 12))
    differences = [effects[k][units[:, 0]] + rng.normal(0, 0.03, 600) - baseline for k in range(2)]
    estimates = [estimate(d, design) for d in differences]
    correlation = statistic_correlation(differences, estimates, design)
    assert correlation is not None and np.corrcoef(differences)[0, 1] > 0.3
    assert abs(correlation[0, 1]) < 0.3 and np.allclose(np.diag(correlation), 1.0)
    unreliable = Estimate(0.0, math.inf, math.nan, 1, None, None, False)
    assert statistic_correlation(differences, [unreliable, estimates[1]], design) is None


@dataclass(frozen=True)
class _Normal:
    """A normally distributed difference with known standard error (a fast stand-in for :class:`Estimate`)."""

    mean: float
    standard_error: float
    reliable: bool = True
    skewness: float = 0.0

    def lower_bound(self, confidence: float) -> float:
        return self.mean - NormalDist().inv_cdf(confidence) * self.standard_error


def _familywise_error(losses: list[float], correlation: float, graph_of, runs: int = 3000,  # type: ignore[no-untyped-def]
                      parametric: bool = False) -> float:
    """Monte Carlo family-wise error with equicorrelated normal statistics and standard error D/3."""
    rng = np.random.default_rng(0)
    m, error = len(losses), D / 3
    shared = rng.normal(size=(runs, 1)) * np.sqrt(correlation)
    means = -np.asarray(losses) * D + error * (shared + rng.normal(size=(runs, m)) * np.sqrt(1 - correlation))
    null = np.asarray(losses) >= 1.0
    wrong, levels = 0, IntersectionLevels(graph_of(m), ALPHA, _equicorrelated(m, correlation))
    for row in means:
        estimates = [_Normal(float(x), error) for x in row]
        confirmed, _ = (closed_test(estimates, levels, max_degradation=D) if parametric  # type: ignore[arg-type]
                        else graphical_test(estimates, graph_of(m), max_degradation=D, alpha=ALPHA))  # type: ignore[arg-type]
        wrong += bool((confirmed & null).any())
    return wrong / runs


@pytest.mark.parametrize("losses", [[1.0] * 5, [1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 1.0]])
@pytest.mark.parametrize("correlation", [0.0, 0.9])
def test_fallback_controls_the_familywise_error_in_least_favourable_configurations(
        losses: list[float], correlation: float) -> None:
    # 3000 runs: standard error 0.4 points at 5%.
    assert _familywise_error(losses, correlation, fallback_graph) <= ALPHA + 0.012


@pytest.mark.parametrize("losses", [[1.0] * 5, [1.0, 1.0, 1.0, 1.0, 0.0]])
@pytest.mark.parametrize("correlation", [0.0, 0.6])
def test_the_parametric_fallback_spends_the_whole_error_rate_and_no_more(
        losses: list[float], correlation: float) -> None:
    # 1500 runs: standard error 0.56 points at 5%. With every candidate at D the whole 5% is spent.
    error = _familywise_error(losses, correlation, fallback_graph, runs=1500, parametric=True)
    assert error <= ALPHA + 0.017
    if losses == [1.0] * 5:
        assert error >= ALPHA - 0.017


def _validated(pattern: str, speedup: float, difference: float, error: float = D / 3) -> CandidateTest:
    """A candidate whose validation says ``difference`` with standard error ``error``."""
    bound = difference - float(stats.norm.ppf(0.95)) * error
    return CandidateTest(pattern, None, difference, speedup, val_corrected=difference, val_lower_bound=bound,
                         val_standard_error=error)


def test_validation_power_puts_half_the_level_where_validation_says_the_speed_is() -> None:
    fallback = fallback_graph(3).weights
    within = power_graph([_validated("fast", 16.0, 0.0), _validated("mid", 12.0, -0.002),
                          _validated("anchor", 5.0, 0.0)], max_degradation=D, confidence=0.95)
    assert within.weights.sum() == pytest.approx(1.0) and within.weights[0] >= 0.5 * fallback[0] + 0.4
    beyond = power_graph([_validated("fast", 16.0, -0.015), _validated("mid", 12.0, -0.002),
                          _validated("anchor", 5.0, 0.0)], max_degradation=D, confidence=0.95)
    assert beyond.weights[0] == pytest.approx(0.5 * fallback[0])  # only its fallback half
    assert beyond.weights[1] >= 0.5 * fallback[1] + 0.4
    assert within.transitions.tolist() == fallback_graph(3).transitions.tolist()
    # Without validation evidence for every candidate: the fallback graph.
    unknown = [_validated("fast", 16.0, 0.0), CandidateTest("anchor", None, None, 5.0)]
    assert power_graph(unknown, max_degradation=D, confidence=0.95).weights.tolist() == [0.6, 0.4]
    assert power_graph([], max_degradation=D, confidence=0.95).weights.size == 0


def test_predicted_power_is_the_chance_of_passing_when_validation_is_right() -> None:
    rng, error, levels = np.random.default_rng(3), D / 3, np.array([0.0, 0.005, 0.02, 0.05])
    confirmation = -0.004 + error * rng.normal(size=200_000)  # the truth is validation's -0.4 points
    passes = [float(np.mean(confirmation - stats.norm.isf(a) * error >= -D)) if a else 0.0 for a in levels]
    predicted = predicted_power(np.full(4, -0.004), np.full(4, error), levels, D)
    assert predicted == pytest.approx(passes, abs=0.005) and predicted[0] == 0.0


def test_weights_chosen_from_validation_keep_the_familywise_error() -> None:
    # Every candidate truly at D; each run's validation (independent of its confirmation) sets the graph.
    rng, runs, m, error = np.random.default_rng(4), 3000, 4, D / 3
    speedups, wrong = [16.0, 12.0, 9.0, 5.0], 0
    for _ in range(runs):
        seen = -D + error * rng.normal(size=m)
        graph = power_graph([_validated(str(i), speedups[i], float(seen[i])) for i in range(m)],
                            max_degradation=D, confidence=0.95)
        estimates = [_Normal(float(x), error) for x in -D + error * rng.normal(size=m)]
        confirmed, _ = graphical_test(estimates, graph, max_degradation=D, alpha=ALPHA)  # type: ignore[arg-type]
        wrong += bool(confirmed.any())
    assert wrong / runs <= ALPHA + 0.012  # 3000 runs: standard error 0.4 points at 5%


def test_the_parametric_closed_test_takes_a_graph_with_zero_weights() -> None:
    graph = Graph(np.array([0.0, 0.6, 0.4]), fallback_graph(3).transitions, "zero on the fastest")
    error = _familywise_error([1.0, 1.0, 1.0], 0.5, lambda m: graph, runs=1000, parametric=True)
    assert error <= ALPHA + 0.021  # 1000 runs: standard error 0.7 points at 5%
    levels_of = IntersectionLevels(graph, ALPHA, _equicorrelated(3, 0.5))
    confirmed, levels = closed_test([_with_p_value(0.001)] * 3, levels_of, max_degradation=D)
    assert confirmed.tolist() == [True, True, True] and levels[0] > 0.0  # the fastest is tested at a level passed on


def _proposal(pattern: str, speedup: float, difference: float, error: float = 0.002, tasks: int = 200,
              seed: int = 0, plain: bool = True) -> Proposal:
    """A proposal whose per-task validation differences have mean ``difference`` and standard error ``error``."""
    noise = np.random.default_rng(seed).normal(size=tasks)
    per_task = difference + (noise - noise.mean()) / noise.std(ddof=1) * error * np.sqrt(tasks)
    return Proposal(pattern, speedup, difference, per_task, plain=plain)


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
    front = validation_front(proposals, TaskDesign.none(), max_degradation=D, confidence=0.95)
    assert [c.pattern for c in front] == [f"p{i}" for i in range(12)]
    bounds = [c.val_lower_bound for c in front]
    assert bounds == sorted(bounds) and bounds[0] >= -D
    candidates = propose(proposals, TaskDesign.none(), max_degradation=D, confidence=0.95, max_candidates=5)
    names = [c.pattern for c in candidates]
    assert names[-1] == "p11" and 2 <= len(names) <= 5 and set(names) <= {c.pattern for c in front}
    assert [c.val_speedup for c in candidates] == sorted((c.val_speedup for c in candidates), reverse=True)


def _front(rows: str) -> list[CandidateTest]:
    """Candidates from lines of ``pattern speedup corrected-difference lower-bound`` (differences in points)."""
    return [CandidateTest(name, None, float(x) / 100, float(speedup), val_corrected=float(x) / 100,
                          val_lower_bound=float(bound) / 100,
                          val_standard_error=(float(x) - float(bound)) / 100 / float(stats.norm.ppf(0.95)))
            for name, speedup, x, bound in (line.split() for line in rows.strip().splitlines())]


# The validation front of the 2026-12-03 flags study (select --max-degradation 0.01), fastest first.
FLAGS_FRONT = """
00110:1 15.73 -0.16 -0.77
00010:2 13.86 -0.05 -0.57
00010:3 10.81 -0.02 -0.53
00010:4 9.51 +0.01 -0.50
00010:5 8.89 +0.03 -0.48
00010:6 8.59 +0.05 -0.46
00011:6 8.53 -0.19 -0.44
00011:8 7.46 -0.21 -0.42
00011:9 6.08 -0.14 -0.35
00011:10 6.00 -0.10 -0.31
00111:9 3.32 -0.05 -0.21
00111:10 3.00 -0.00 -0.15
01111:9 1.85 -0.03 -0.14
"""


def test_the_picks_go_where_validation_predicts_the_speed() -> None:
    front = _front(FLAGS_FRONT)
    picks = pick_candidates(front, max_candidates=5, max_degradation=D, confidence=0.95)
    names = [c.pattern for c in picks]
    # The fast patterns validation puts well within D are tested, not the slow, safe middle of the front.
    assert names[:3] == ["00110:1", "00010:2", "00010:3"] and names[-1] == "01111:9" and len(names) <= 5
    evenly = [front[i] for i in (0, 3, 6, 9, 12)]  # the previous rule's picks
    assert predicted_speedup(picks, max_degradation=D, confidence=0.95) > predicted_speedup(
        evenly, max_degradation=D, confidence=0.95)
    # A candidate that only thins the anchor's share is not added: here validation puts "fast" two D away.
    hopeless = _front("fast 16 -2.0 -2.5\nanchor 2 0.0 -0.3")
    assert [c.pattern for c in pick_candidates(hopeless, max_candidates=5, max_degradation=D,
                                                confidence=0.95)] == ["anchor"]
    assert [c.pattern for c in pick_candidates(front, max_candidates=1, max_degradation=D, confidence=0.95)] == [
        "01111:9"]
    with pytest.raises(ValueError, match="validation"):
        pick_candidates([CandidateTest("a", None, None, 2.0)], max_candidates=5, max_degradation=D, confidence=0.95)


def test_the_anchor_is_the_most_reliable_plain_pattern_when_a_richer_one_tops_validation() -> None:
    proposals = [_proposal("00010:1", 18.0, -0.006), _proposal("00010:4", 12.0, -0.004, seed=1),
                 _proposal("00010:3@2+10011:1@4", 6.0, -0.001, seed=2, plain=False),
                 _proposal("00111:10", 3.5, -0.002, seed=3),
                 _proposal("00110:4+11001:5@4", 1.7, 0.004, seed=4, plain=False)]
    candidates = propose(proposals, TaskDesign.none(), max_degradation=D, confidence=0.95, max_candidates=5)
    # The multi-phase pattern faster than the anchor stays; the slower, more reliable-looking one does not.
    assert [c.pattern for c in candidates] == ["00010:1", "00010:4", "00010:3@2+10011:1@4", "00111:10"]
    richer_only = [p for p in proposals if not p.plain]
    assert propose(richer_only, TaskDesign.none(), max_degradation=D, confidence=0.95,
                   max_candidates=5)[-1].pattern == "00110:4+11001:5@4"  # no plain one: the most reliable


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
    # Its level with the failed candidate: the anchor's share, raised by the two candidates' correlation.
    assert ANCHOR_SHARE * 0.05 <= decision.candidates[1].level < 0.05
    decision = confirm_in_sequence(_candidates("fast"), lambda c: differences[c.pattern], TaskDesign.none(),
                                   max_degradation=D, confidence=0.95)
    assert decision.selected is None and decision.candidates[0].level == pytest.approx(0.05)
    assert decision.reason.startswith("none of the 1 candidates was confirmed") and "baseline" in decision.reason
    assert "no pattern faster than the baseline" in confirm_in_sequence(
        [], lambda c: differences[c.pattern], TaskDesign.none(), max_degradation=D, confidence=0.95).reason


def test_the_power_example_runs_and_reports_every_procedure() -> None:
    # 10 runs per front: a smoke test of the script (its error rates are asserted above and in
    # tests/test_selection_error_rate.py, on enough runs to mean something).
    out = subprocess.run([sys.executable, str(EXAMPLES / "selection_power.py"), "--runs", "10", "--json"],
                         check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout)
    assert {"runs", "seed", "procedures", "shipped", "fronts", "least_favourable"} <= set(result)
    assert result["runs"] == 10 and result["shipped"] in result["procedures"]
    assert {"fixed sequence", "fallback (40% on the slowest)", "fallback (40% on the slowest), parametric",
            "fallback, half the weights by validation power, parametric"} <= set(result["procedures"])
    for numbers in [*result["fronts"].values(), *result["least_favourable"].values()]:
        for row in (numbers[name] for name in result["procedures"]):
            assert 0.0 <= row["familywise_error"] <= 1.0 and 1.0 <= row["mean_speedup"] <= 17.0


def test_the_power_example_compares_the_rules_on_long_fronts_with_and_without_shift() -> None:
    # A smoke test of --long-fronts (its figures in docs/selection.md come from more runs).
    out = subprocess.run([sys.executable, str(EXAMPLES / "selection_power.py"), "--long-fronts", "--runs", "2",
                          "--shift", "0.5", "--json"], check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout)
    assert result["runs"] == 2 and len(result["speedups"]) == 13 and set(result["shifts"]) == {"0.0", "0.5"}
    for table in result["shifts"].values():
        for numbers in [*table["fronts"].values(), table["least_favourable"]]:
            assert any(rule.startswith("shipped") for rule in numbers)
            for rule, row in numbers.items():
                if rule == "losses_in_d":
                    continue
                assert 1 <= row["picks"] <= 8 and 1.0 <= row["mean_speedup"] <= 15.7
                assert 0.0 <= row["familywise_error"] <= 1.0


def test_differences_without_spread_confirm_nothing_and_say_so() -> None:
    # Two tasks at 100% for both: every paired difference is 0, the standard error 0, and a bound of zero width.
    candidate = CandidateTest("00010:1", None, 0.0, 10.0)
    decision = confirm_in_sequence([candidate], lambda _: np.zeros(2), TaskDesign.none(), max_degradation=D,
                                   confidence=0.95)
    assert decision.selected is None and not decision.candidates[0].confirmed
    assert "no spread" in decision.reason and "more tasks" in decision.reason
    assert p_value(estimate(np.zeros(5), TaskDesign.none()), D) == 1.0
    assert p_value(estimate(np.array([0.0, 0.01, -0.01, 0.0]), TaskDesign.none()), D) < 1.0


def test_a_candidate_whose_adaptation_diverges_is_not_confirmed_and_the_others_are_still_tested() -> None:
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 0.02, 300)

    def differences(candidate: CandidateTest) -> np.ndarray:
        if candidate.pattern == "fast":
            raise AdaptationDiverged("fast diverged", diverged=7, tasks=300)
        return noise - 0.0

    decision = confirm_in_sequence(_candidates("fast", "slow"), differences, TaskDesign.none(), max_degradation=D,
                                   confidence=0.95)
    fast, slow = decision.candidates
    assert decision.selected is not None and decision.selected.pattern == "slow" and slow.confirmed
    assert (fast.confirmed, fast.diverged, fast.lower_bound, fast.test_difference) == (False, 7, None, None)
    assert "adaptation diverged: fast on 7 of 300 tasks" in decision.reason
    # The diverged candidate keeps its share: the slow one holds no more than it would beside a failing one.
    assert slow.level < 0.05
    everything = confirm_in_sequence(_candidates("fast"), differences, TaskDesign.none(), max_degradation=D,
                                     confidence=0.95)
    assert everything.selected is None and "diverged" in everything.reason


def _mixed_groups(tasks: int, seed: int = 0) -> tuple[tuple[int, ...], ...]:
    """Five-way tasks whose ways come from two groups in varying shares (as alphabets mix in Omniglot tasks)."""
    rng = np.random.default_rng(seed)
    return tuple(tuple(int(g) for g in rng.integers(0, 2, 5)) for _ in range(tasks))


def _gap_in_standard_errors(differences: np.ndarray, design: TaskDesign) -> float:
    """The group correction ``validation_front`` applies to one proposal (alone: no winner's curse), in its s.e."""
    (front,) = validation_front([Proposal("p", 10.0, float(differences.mean()), differences)], design,
                                max_degradation=1.0, confidence=0.95)
    return (front.val_corrected - front.val_difference) / front.val_standard_error


def _omniglot_like(rng: np.random.Generator, groups: int, tasks: int = 200,
                   characters: int = 20) -> tuple[TaskDesign, np.ndarray]:
    """Five-way tasks drawing classes uniformly from ``groups`` groups of characters x 4 rotations; each way's group."""
    classes = np.array([rng.choice(groups * characters * 4, 5, replace=False) for _ in range(tasks)])
    units = classes // 4
    rows = lambda a: tuple(tuple(int(x) for x in row) for row in a)  # noqa: E731
    return TaskDesign(rows(classes), rows(units), rows(units // characters)), units // characters


@pytest.mark.parametrize("groups", [2, 10])
def test_with_no_group_effect_the_group_correction_moves_a_pattern_rarely_and_little(groups: int) -> None:
    # 200 tasks, a per-task spread of 4 points and no group effect: the least favourable group's coefficient,
    # the rule before, lay 1.5 (2 groups) to 10 (10 groups) standard errors below the mean on every draw.
    rng = np.random.default_rng(groups)
    gaps = []
    for _ in range(30):
        design, _ = _omniglot_like(rng, groups)
        gaps.append(_gap_in_standard_errors(rng.normal(-0.002, 0.04, 200), design))
    assert np.mean(gaps) > -1.5 and np.mean(np.asarray(gaps) < 0.0) <= 0.4, (np.mean(gaps), gaps)


def test_a_group_effect_like_the_frozen_head_patterns_is_caught() -> None:
    # The 2026-12-06 case: +0.8 points on Greek (24 characters), -2.2 on Tagalog (17), 3.5 points of task noise.
    rng = np.random.default_rng(0)
    caught = 0
    for _ in range(30):
        design, group = _omniglot_like(rng, 2)
        greek = (group == 0).mean(axis=1)
        split = 0.008 * greek - 0.0221 * (1 - greek) + rng.normal(0.0, 0.035, 200)
        caught += _gap_in_standard_errors(split, design) < -2.0
    assert caught >= 24, caught
    # Groups the shares cannot tell apart (1 and 2 always drawn together) no longer switch the correction off.
    tasks = [(0,) * k + (1, 2) * ((5 - k) // 2) + (0,) * ((5 - k) % 2) for k in rng.integers(0, 6, 300)]
    design = TaskDesign(tuple((i,) for i in range(300)), tuple((i,) for i in range(300)), tuple(tasks))
    share = np.array([task.count(0) / 5 for task in tasks])
    split = 0.03 * share - 0.03 * (1 - share) + rng.normal(0.0, 0.02, 300)
    assert group_variance(split, design.groups) > 0.0 and _gap_in_standard_errors(split, design) < -2.0
    assert group_variance(split, None) == 0.0 and new_group_gap(split, ((0,) * 5,) * 300, 0.001, 0.95) == 0.0


def test_the_group_correction_keeps_the_front_without_effects_and_drops_a_pattern_the_groups_disagree_on() -> None:
    groups = _mixed_groups(400)
    share = np.array([task.count(1) / 5 for task in groups])
    noise = np.random.default_rng(1).normal(0.0, 0.002, share.size)
    split = 0.01 * (1 - share) - 0.012 * share + noise  # +1 point on group 0, -1.2 on group 1
    design = TaskDesign(tuple((i,) for i in range(400)), tuple((i,) for i in range(400)), groups)
    proposals = [Proposal("splits", 12.0, float(split.mean()), split), Proposal("agrees", 8.0, -0.002, noise - 0.002)]
    front = validation_front(proposals, design, max_degradation=D, confidence=0.95)
    assert [c.pattern for c in front] == ["agrees"]
    assert [c.pattern for c in validation_front(proposals, TaskDesign.none(), max_degradation=D,
                                                confidence=0.95)] == ["splits", "agrees"]  # without groups


def test_the_group_correction_simulation_runs_and_the_old_rule_moves_every_pattern(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import group_correction  # examples/group_correction.py, in this process: no second start of torch

    rng = np.random.default_rng(0)
    numbers = group_correction.summary(group_correction.simulate(10, False, 2, 200, rng))
    assert numbers["moved:old/plain"] == 1.0 and numbers["mean_gap_se:old/plain"] < -5.0
    assert numbers["mean_gap_se:new/plain"] > numbers["mean_gap_se:old/plain"]
    latin = group_correction.simulate_latin(2, 200, rng)
    assert set(latin) == {"none", "old", "new"} and 0.0 <= latin["new"]["frozen_head_tops_front"] <= 1.0
