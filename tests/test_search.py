from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from patternsearch import Pattern, load_checkpoint, open_experiment, save_checkpoint
from patternsearch.errors import UsageError
from patternsearch.measurement import PatternEvaluator
from patternsearch.search import (
    CONFIG_ATTR,
    LR_SCALES,
    SearchSpace,
    list_studies,
    lr_param,
    optimize,
    select,
    steps_param,
    study_candidates,
    validation_choice,
)
from patternsearch.uncertainty import TaskDesign

from .conftest import SINUSOID, measured_attrs

TINY = dict(tasks=12, latency_tasks=1, repeats=1, progress=False, heartbeat_interval=2)


def _complete(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_tiny_study_reaches_target_with_baseline_first(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optimize(8, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, **TINY)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 8
    assert trials[0].number == 0 and trials[0].user_attrs["pattern"] == "111:10"
    assert trials[0].values[0] == pytest.approx(1.0)  # the baseline's time ratio to itself
    for key in ("pattern", "accuracy", "ci95", "latency_ms", "latency_iqr_ms", "baseline_latency_ms", "speedup",
                "flops", "device", "version"):
        assert key in trials[1].user_attrs
    assert len(trials[1].user_attrs["scores"]) == 12
    assert study.study_name == "sinusoid-mlp-5w5s"
    assert study.user_attrs[CONFIG_ATTR]["sampler"] == "tpe"


def test_target_is_total_finished_study_is_noop_larger_target_extends(
    sinusoid_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(4, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **TINY)
    messages: list[str] = []
    optimize(4, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", log=messages.append,
             **TINY)
    assert any("nothing to do" in m for m in messages)
    assert len(_complete(storage, "s")) == 4
    optimize(6, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **TINY)
    assert len(_complete(storage, "s")) == 6


def test_equal_patterns_are_not_evaluated_twice(sinusoid_checkpoint: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(1, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **TINY)
    study = optuna.load_study(study_name="s", storage=storage)
    # Three spellings of "no adaptation" and the baseline again.
    for params in ({"g0": False, "g1": False, "g2": False, "steps": 4},
                   {"g0": True, "g1": False, "g2": True, "steps": 0},
                   {"g0": False, "g1": False, "g2": False, "steps": 0},
                   {"g0": True, "g1": True, "g2": True, "steps": 10}):
        study.enqueue_trial(params)
    measured: list[str] = []
    original = PatternEvaluator.measure

    def spy(self: PatternEvaluator, pattern, *args):  # type: ignore[no-untyped-def]
        measured.append(str(pattern))
        return original(self, pattern, *args)

    monkeypatch.setattr(PatternEvaluator, "measure", spy)
    optimize(5, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **TINY)
    assert measured == ["000:0"]
    trials = _complete(storage, "s")
    assert [t.user_attrs["pattern"] for t in trials] == ["111:10", "000:0", "000:0", "000:0", "111:10"]
    assert [t.user_attrs.get("repeat_of") for t in trials] == [None, None, 1, 1, 0]
    assert trials[4].values == trials[0].values


def test_configuration_mismatch_is_refused_and_database_unchanged(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    optimize(2, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **TINY)
    before = db.read_bytes()
    with pytest.raises(UsageError) as error:
        optimize(3, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s",
                 **{**TINY, "tasks": 13, "max_steps": 12})
    assert "tasks: 12 -> 13" in str(error.value) and "max_steps: 10 -> 12" in str(error.value)
    assert db.read_bytes() == before


def test_phases_space_with_lr_search_draws_valid_patterns_and_is_recorded(sinusoid_checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    study = optimize(10, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="p", space="phases",
                     max_phases=3, search_lr=True, max_steps=10, **TINY)
    config = study.user_attrs[CONFIG_ATTR]
    assert (config["space"], config["max_phases"], config["search_lr"]) == ("phases", 3, True)
    trials = [t for t in study.trials if "pattern" in t.user_attrs]
    assert trials[0].user_attrs["pattern"] == "111:10"  # the baseline first, encoded in the richer space
    patterns = [Pattern.parse(t.user_attrs["pattern"]) for t in trials]
    assert all(p.steps <= 10 and len(p.phases) <= 3 for p in patterns)
    assert all(phase.scale in LR_SCALES for p in patterns for phase in p.phases)
    assert any(len(p.phases) > 1 for p in patterns) and any(phase.scale != 1 for p in patterns for phase in p.phases)
    for trial, pattern in zip(trials, patterns, strict=True):  # the pattern is what the parameters say
        assert SearchSpace(3, 10, "phases", 3, True).params(pattern)[steps_param(0)] == pattern.phases[0].steps \
            or pattern.is_none
        assert trial.params[lr_param(0)] == pattern.phases[0].scale or pattern.is_none
    before = db.read_bytes()
    with pytest.raises(UsageError, match="space: 'phases' -> 'flags'"):  # resuming with another space
        optimize(12, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="p", **TINY)
    with pytest.raises(UsageError, match="search_lr: True -> False"):
        optimize(12, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="p", space="phases",
                 max_phases=3, **TINY)
    assert db.read_bytes() == before


@pytest.mark.parametrize(("space", "phases", "message"), [
    ("flags", 2, "--max-phases needs --space phases"),
    ("phases", 11, "--max-phases must lie in"),
    ("layers", None, "unknown search space"),
])
def test_bad_space_options_are_refused_before_loading(space: str, phases: int | None, message: str,
                                                      tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=message):
        optimize(2, SINUSOID.but(checkpoint=tmp_path / "x"), storage=f"sqlite:///{tmp_path}/s.db", space=space,
                 max_phases=phases, **TINY)
    assert not (tmp_path / "s.db").exists()


def test_space_rejects_patterns_it_cannot_draw() -> None:
    space = SearchSpace(3, 10, "phases", 2, False)
    assert space.params(Pattern.parse("111:1+001:4")) == {
        "g0": True, "g1": True, "g2": True, "steps": 1, "p2_g0": False, "p2_g1": False, "p2_g2": True, "p2_steps": 4}
    assert space.params(Pattern.parse("011:3"))["p2_steps"] == 0  # an absent phase takes no step
    for text in ("111:1+001:4+011:1", "111:1+001:4@2", "111:11"):
        with pytest.raises(UsageError, match="lies outside"):
            space.params(Pattern.parse(text))
    with pytest.raises(UsageError, match="lies outside"):
        SearchSpace(3, 10, "flags", 1, True).params(Pattern.parse("111:1@3"))  # 3 is not a searched scale


def _hand_built_study(devices: tuple[str, str] = ("cpu", "cpu")) -> optuna.Study:
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr(CONFIG_ATTR, {"baseline": "111:10", "time_metric": "ratio"})
    distributions = {"g0": CategoricalDistribution([False, True]), "g1": CategoricalDistribution([False, True]),
                     "g2": CategoricalDistribution([False, True]), "steps": IntDistribution(0, 10)}
    rows = [  # pattern, time ratio, accuracy, device
        ("111:10", 1.0, 0.90, devices[0]),
        ("011:3", 0.3, 0.895, devices[1]),
        ("001:1", 0.05, 0.85, devices[0]),
        ("111:5", 0.5, 0.899, devices[0]),
        ("110:9", 0.8, 0.91, devices[0]),
        ("010:6", 0.6, 0.80, devices[0]),  # dominated
    ]
    for pattern, ratio, accuracy, device in rows:
        flags, steps = pattern.split(":")
        params = {f"g{i}": c == "1" for i, c in enumerate(flags)} | {"steps": int(steps)}
        study.add_trial(create_trial(
            params=params, distributions=distributions, values=[ratio, accuracy],
            user_attrs=measured_attrs(pattern, accuracy, 1 / ratio, device),
        ))
    return study


@pytest.mark.parametrize(("degradation", "expected"), [(0.01, "011:3"), (0.0, "110:9"), (0.06, "001:1"),
                                                         (0.001, "111:5"), (1.0, "001:1")])
def test_select_picks_fastest_pareto_trial_within_degradation(degradation: float, expected: str) -> None:
    choice = validation_choice(_hand_built_study(), degradation)
    assert choice.selected.user_attrs["pattern"] == expected
    assert choice.baseline.user_attrs["pattern"] == "111:10"
    assert not choice.mixed_devices


def test_select_warns_on_mixed_devices() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choice = validation_choice(_hand_built_study(("cpu", "NVIDIA H100")), 0.01)
    assert choice.mixed_devices
    assert any("several devices" in str(w.message) for w in caught)


@pytest.mark.parametrize("degradation", [-0.1, 1.5])
def test_select_rejects_degradation_out_of_range(degradation: float) -> None:
    with pytest.raises(UsageError, match="between 0 and 1"):
        validation_choice(_hand_built_study(), degradation)


def test_select_confirms_on_test_split(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(6, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, **TINY)
    result = select(0.05, storage=storage, test_tasks=15, checkpoint=sinusoid_checkpoint, device="cpu")
    assert result.baseline == "111:10"
    assert result.confirmation.tasks == 15 and result.fresh.tasks == 15  # report tasks default to as many
    assert result.fresh.accuracy is not None and result.timing.speedup is not None
    assert result.fresh.classes_disjoint is False and result.fresh.classes is None  # sinusoids have no classes
    assert result.validation.accuracy >= result.validation.baseline_accuracy - 0.05
    assert result.fresh.difference == pytest.approx(result.fresh.accuracy - result.fresh.baseline_accuracy, abs=1e-5)


def test_select_refuses_another_checkpoint(sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    optimize(2, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, **TINY)
    other = tmp_path / "other.pt"
    other.write_bytes(sinusoid_checkpoint.read_bytes() + b"")
    from patternsearch import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(sinusoid_checkpoint)
    ckpt.history = []
    save_checkpoint(ckpt, other)
    with pytest.raises(UsageError, match="is not the one the study was made with"):
        select(0.01, storage=storage, test_tasks=5, checkpoint=other, device="cpu")


def test_diverging_and_out_of_memory_trials_fail_with_reason_and_study_goes_on(
    sinusoid_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    original = PatternEvaluator.measure

    def flaky(self: PatternEvaluator, pattern, *args):  # type: ignore[no-untyped-def]
        if pattern.steps == 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if pattern.steps >= 6 and pattern != self.baseline:
            raise FloatingPointError("non-finite inner-loop loss (nan)")
        return original(self, pattern, *args)

    monkeypatch.setattr(PatternEvaluator, "measure", flaky)
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optimize(12, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, **TINY)
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 12
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "the sampler proposed no failing pattern"
    for trial in failed:
        assert trial.user_attrs["fail_reason"].startswith(("FloatingPointError", "OutOfMemoryError"))


def test_huge_inner_learning_rate_raises_floating_point_error(sinusoid_checkpoint: Path) -> None:
    from patternsearch.measurement import CachedScorer

    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    scorer = CachedScorer(experiment.model, experiment.benchmark, experiment.tasks("val", 3, 0), inner_lr=1e12)
    with pytest.raises(FloatingPointError, match="non-finite"):
        scorer.scores(experiment.pattern("111:10"))


def test_select_rejects_a_candidate_that_fails_on_test(sinusoid_checkpoint: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from patternsearch.measurement import CachedScorer

    storage = f"sqlite:///{tmp_path}/s.db"
    study = optimize(16, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, **TINY)
    experiment = open_experiment(SINUSOID.but(checkpoint=sinusoid_checkpoint))
    validation = TaskDesign.of(experiment.tasks("val", TINY["tasks"], 0))
    proposed = study_candidates(study, validation, max_degradation=1.0, confidence=0.95, max_candidates=5)
    assert len(proposed) >= 2, "need two candidates"
    first, second = (c.pattern for c in proposed[:2])
    original = CachedScorer.scores

    def worse_first(self, pattern, tasks=None):  # type: ignore[no-untyped-def]
        # The first candidate is far worse than the baseline on test, every other one as good up to a small
        # per-task jitter (identical scores have no spread to bound, and confirm nothing).
        scores = original(self, Pattern.parse("111:10"), tasks)
        if str(pattern) == first:
            return scores - 100.0
        return scores if str(pattern) == "111:10" else scores + 0.01 * np.sin(np.arange(scores.size))

    monkeypatch.setattr(CachedScorer, "scores", worse_first)
    result = select(1.0, storage=storage, test_tasks=8, checkpoint=sinusoid_checkpoint, device="cpu")
    tested = [(c.pattern, c.confirmed) for c in result.confirmation.candidates]
    assert tested[:2] == [(first, False), (second, True)]
    assert result.pattern == second and result.confirmed
    assert result.confirmation.lower_bound == result.confirmation.candidates[1].lower_bound >= -1.0


def test_dominated_patterns_stop_early_count_toward_target_and_repeat_as_stopped(
    sinusoid_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patternsearch.measurement import CachedScorer

    storage = f"sqlite:///{tmp_path}/s.db"
    tiny = {**TINY, "tasks": 48}
    optimize(1, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **tiny)
    study = optuna.load_study(study_name="s", storage=storage)
    distributions = {"g0": CategoricalDistribution([False, True]), "g1": CategoricalDistribution([False, True]),
                     "g2": CategoricalDistribution([False, True]), "steps": IntDistribution(0, 10)}
    # An instant, perfect trial (MSE 0 on every task): any pattern measured later is surely worse.
    study.add_trial(create_trial(
        params={"g0": False, "g1": False, "g2": True, "steps": 1}, distributions=distributions, values=[0.0, 0.0],
        user_attrs=measured_attrs("001:1", 0.0, 100.0, scores=[0.0] * 48),
    ))
    for steps in (3, 3, 4):
        study.enqueue_trial({"g0": True, "g1": False, "g2": False, "steps": steps})
    scored: list[int] = []
    original = CachedScorer.scores

    def spy(self, pattern, tasks=None):  # type: ignore[no-untyped-def]
        scored.append(len(tasks))
        return original(self, pattern, tasks)

    monkeypatch.setattr(CachedScorer, "scores", spy)
    optimize(4, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", **tiny)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials[:4]] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                             TrialState.PRUNED]
    stopped, repeat = trials[2].user_attrs, trials[3].user_attrs
    assert stopped["dominated_by"] == 1 and stopped["tasks_scored"] == 24  # 4 strided chunks of 6: 20 needed
    assert len(stopped["scores"]) == len(stopped["scored_tasks"]) == 24
    assert stopped["accuracy"] == pytest.approx(sum(stopped["scores"]) / 24)
    assert repeat["repeat_of"] == 2 and repeat["dominated_by"] == 1
    assert scored == [6, 6, 6, 6]  # the repeat was not measured again
    summary = list_studies(storage)[0]
    assert (summary.complete, summary.stopped_early, summary.target) == (2, 2, 4)

    messages: list[str] = []
    optimize(4, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", log=messages.append,
             **tiny)
    assert any("4 evaluated trials" in m for m in messages)
    scored.clear()
    optimize(5, SINUSOID.but(checkpoint=sinusoid_checkpoint), storage=storage, study_name="s", early_stopping=False,
             **tiny)
    last = optuna.load_study(study_name="s", storage=storage).trials[-1]
    assert last.user_attrs["pattern"] == "100:4"  # the enqueued one left waiting above
    assert last.state == TrialState.COMPLETE and last.user_attrs["tasks_scored"] == 48 and scored == [48]


def test_diverging_learning_rate_scales_fail_their_trials_and_the_search_goes_on(sinusoid_checkpoint: Path,
                                                                                 tmp_path: Path) -> None:
    """No mock: at 5x the inner learning rate of the tiny checkpoint, scales of 4 and 8 diverge for real."""
    checkpoint = load_checkpoint(sinusoid_checkpoint)
    checkpoint.inner_lr = 0.05
    hot = tmp_path / "hot.pt"
    save_checkpoint(checkpoint, hot)
    study = optimize(12, SINUSOID.but(checkpoint=hot), storage=f"sqlite:///{tmp_path}/s.db", space="phases",
                     search_lr=True, **TINY)
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 12
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "no drawn scale diverged"
    for trial in failed:
        assert trial.user_attrs["fail_reason"].startswith(("FloatingPointError", "AdaptationDiverged"))
        assert any(phase.scale >= 2 for phase in Pattern.parse(trial.user_attrs["pattern"]).phases)


def test_confirm_pattern_adapts_the_candidate_on_its_own_checkpoint_even_as_the_baseline_pattern(
        sinusoid_checkpoint: Path, tmp_path: Path) -> None:
    # `select --pattern full --checkpoint SPECIAL --baseline-checkpoint PARENT` once scored both sides on the parent.
    from patternsearch import specialize
    from patternsearch.benchmarks import disjoint_task_sets
    from patternsearch.measurement import score_pattern
    from patternsearch.search import confirm_pattern

    special = tmp_path / "special.pt"
    specialize(sinusoid_checkpoint, "001:3", 3, special, meta_batch=2, val_every=3, val_tasks=2, device="cpu",
               progress=False)
    candidate = open_experiment(SINUSOID.but(checkpoint=special))
    parent = candidate.with_checkpoint(sinusoid_checkpoint)
    result = confirm_pattern(candidate, "full", 10.0 / 100, baseline_checkpoint=sinusoid_checkpoint, test_tasks=10,
                             report_tasks=10, timed_tasks=1, timed_rounds=1)
    decision_tasks, fresh_tasks, _ = disjoint_task_sets(candidate.benchmark, "test", 10, 10, 0)

    def paired(tasks: list) -> float:
        mine = score_pattern(candidate.model, candidate.benchmark, tasks, candidate.full, candidate.inner_lr)
        base = score_pattern(parent.model, parent.benchmark, tasks, parent.full, parent.inner_lr)
        return float((mine - base).mean())

    truth = paired(decision_tasks)
    assert abs(truth) > 1e-4  # the two checkpoints really differ
    assert result.confirmation.candidates[0].test_difference == pytest.approx(truth, rel=1e-5)
    if result.confirmed:  # the report tasks then compare the two checkpoints too
        assert result.fresh.difference == pytest.approx(paired(fresh_tasks), rel=1e-5)
    else:
        assert result.fresh.difference == 0.0 and result.pattern == result.baseline


def test_a_smaller_target_never_lowers_the_studys_and_says_which_holds(sinusoid_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    import warnings

    storage = f"sqlite:///{tmp_path}/s.db"
    spec = SINUSOID.but(checkpoint=sinusoid_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)  # once printed per trial
        optimize(3, spec, storage=storage, study_name="s", sampler="brute-force", **TINY)
    messages: list[str] = []
    optimize(2, spec, storage=storage, study_name="s", sampler="brute-force", log=messages.append, **TINY)
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs["patternsearch_target_trials"] == 3
    assert any("keeps its target of 3 trials" in m for m in messages), messages
    assert len(study.get_trials(states=(TrialState.WAITING, TrialState.COMPLETE))) == 3
    assert sum(t.user_attrs.get("pattern") == "111:10" for t in study.trials) == 1  # the baseline enqueued once
