from __future__ import annotations

import numpy as np
import pytest
import torch

from patternsearch import Pattern, create_benchmark, create_model, layer_groups
from patternsearch.measurement import CachedScorer
from patternsearch.reference import reference_adapt, reference_scores

from .conftest import ResidualNet


@pytest.fixture(scope="module")
def omniglot_tasks(omniglot_root):  # type: ignore[no-untyped-def]
    bench = create_benchmark("omniglot-small", ways=5, shots=1, queries=5, data_root=omniglot_root)
    return bench, bench.tasks("val", 6, seed=3)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("factory", [lambda: create_model("conv4", 5, hidden=8), lambda: ResidualNet()],
                         ids=["conv4", "residual"])
def test_cached_scores_equal_the_naive_loop(factory, threads, omniglot_tasks) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = factory().train()
    bench, tasks = omniglot_tasks
    groups = 5 if isinstance(model, torch.nn.Sequential) else 4
    scorer = CachedScorer(model, bench, tasks, inner_lr=0.4, threads=threads, feature_bytes=1 << 20)
    # The order exercises feature reuse and trajectory reuse (same flags, more steps, then fewer).
    head, top, full = "0" * (groups - 1) + "1", "0" * (groups - 2) + "11", "1" * groups
    texts = [f"{head}:2", f"{top}:1", f"{head}:5", f"{full}:2", f"{full}:4", f"{full}:3", "0" * groups + ":0",
             f"{head}:3", f"{full}:2+{head}:3", f"{full}:2+{head}:1@4", f"{top}:1@0.5+{full}:1+{head}:2"]
    for text in texts:
        pattern = Pattern.parse(text)
        cached = scorer.scores(pattern)
        naive = reference_scores(model, tasks, pattern, 0.4, bench)
        # Channels-last convolutions round differently: allow one flipped query in a task, never more.
        np.testing.assert_allclose(cached, naive, atol=1.01 / 25, err_msg=text)
        assert abs(cached.mean() - naive.mean()) <= 1.01 / 25 / len(tasks)


def test_trajectories_skip_steps_already_taken(omniglot_tasks) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model("conv4", 5, hidden=8)
    bench, tasks = omniglot_tasks
    scorer = CachedScorer(model, bench, tasks, inner_lr=0.4)
    scorer.scores(Pattern.parse("00111:3"))
    assert scorer.steps_run == 3 * len(tasks)
    scorer.scores(Pattern.parse("00111:7"))  # continues from step 3
    assert scorer.steps_run == 7 * len(tasks)
    scorer.scores(Pattern.parse("00111:5"))  # continues from step 3 again
    assert scorer.steps_run == 9 * len(tasks)
    scorer.scores(Pattern.parse("00011:2"))  # other flags start over
    assert scorer.steps_run == 11 * len(tasks)
    scorer.scores(Pattern.parse("00111:3+00001:2"))  # phases extending 00111:3 continue from it
    assert scorer.steps_run == 13 * len(tasks)
    scorer.scores(Pattern.parse("00111:3+00001:4"))  # ... and from their own stored phases
    assert scorer.steps_run == 15 * len(tasks)
    scorer.scores(Pattern.parse("00111:2@2+00001:1"))  # another scale is another trajectory
    assert scorer.steps_run == 18 * len(tasks)


def test_a_subset_scores_like_the_full_set_and_resumes_task_by_task(omniglot_tasks) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model("conv4", 5, hidden=8)
    bench, tasks = omniglot_tasks
    reference = CachedScorer(model, bench, tasks, inner_lr=0.4, threads=1)
    scorer = CachedScorer(model, bench, tasks, inner_lr=0.4, threads=2)
    pattern = Pattern.parse("00111:3")
    subset = [4, 0, 5]  # both shards, out of order
    np.testing.assert_array_equal(scorer.scores(pattern, subset), reference.scores(pattern)[subset])
    assert scorer.steps_run == 3 * len(subset)
    longer = Pattern.parse("00111:5")
    np.testing.assert_allclose(scorer.scores(longer), reference.scores(longer), atol=1e-6)
    # The three tasks scored before continue from step 3; the other three start over.
    assert scorer.steps_run == 3 * len(subset) + 2 * len(subset) + 5 * (len(tasks) - len(subset))
    with pytest.raises(IndexError):
        scorer.scores(pattern, [len(tasks)])


@pytest.mark.parametrize("factory", [lambda: create_model("conv4", 5, hidden=8), lambda: ResidualNet()],
                         ids=["conv4", "residual"])
def test_batched_scoring_equals_one_task_at_a_time(factory, omniglot_tasks) -> None:  # type: ignore[no-untyped-def]
    """The GPU path (tasks stacked with vmap), run on the CPU: same scores and same stored trajectories."""
    torch.manual_seed(0)
    model = factory().train()
    bench, tasks = omniglot_tasks
    groups = 5 if isinstance(model, torch.nn.Sequential) else 4
    each = CachedScorer(model, bench, tasks, inner_lr=0.4, threads=1, batch_tasks=False)
    batched = CachedScorer(model, bench, tasks, inner_lr=0.4, threads=1, batch_tasks=True)
    head, top, full = "0" * (groups - 1) + "1", "0" * (groups - 2) + "11", "1" * groups
    texts = [f"{head}:2", f"{full}:2", f"{full}:4", f"{top}:3", f"{full}:2+{head}:2@2", f"{head}:1+{top}:2"]
    for text in texts:
        pattern = Pattern.parse(text)
        np.testing.assert_allclose(batched.scores(pattern, [5, 1, 3]), each.scores(pattern, [5, 1, 3]),
                                   atol=1.01 / 25, err_msg=text)
        np.testing.assert_allclose(batched.scores(pattern), each.scores(pattern), atol=1.01 / 25, err_msg=text)
    assert batched.steps_run == each.steps_run  # resumed from the same stored states


@pytest.mark.parametrize("text", ["00111:3", "11111:1+00011:2@2", "00001:1@0.5+01011:2"])
def test_batched_adaptation_matches_the_reference_numerically(text, omniglot_tasks) -> None:  # type: ignore[no-untyped-def]
    from patternsearch.measurement._scoring import _ShardScorer

    torch.manual_seed(0)
    model = create_model("conv4", 5, hidden=8).train()
    bench, tasks = omniglot_tasks
    shard = _ShardScorer(model, bench, tasks, 0.4, batch_tasks=True)
    pattern = Pattern.parse(text)
    shard.scores(pattern)
    state = shard._trajectories[pattern]
    for i, task in enumerate(tasks):
        # The batched path convolves NCHW (vmap cannot convolve channels-last): compare with the NCHW loop.
        reference = reference_adapt(model, task.x_support, task.y_support, pattern, 0.4, layout=False)
        assert set(state[i]) == {name for group, flag in zip(layer_groups(model), pattern.flags, strict=True)
                                 if flag for name in group.params}
        for name, tensor in state[i].items():
            expected = reference[name]
            assert float((tensor - expected).abs().max() / expected.abs().max()) < 1e-4, name
