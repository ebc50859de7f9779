"""The mean classification score follows the authors' update rule, round-trips through a state
dict, and stays identical across distributed ranks fed different batches."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loce.models.indicator import ClassPrior, MeanScore, build_indicator, group_means


def test_update_rule_on_a_hand_made_batch():
    score = MeanScore(num_classes=4, alpha=0.9, bg_score=0.02)
    assert score.scores.tolist() == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.02])
    labels = torch.tensor([0, 2, 0, 1, 0, 4])  # the background entry must not move
    values = torch.tensor([0.5, 0.8, 0.2, 0.4, 0.8, 0.9])
    score.update(labels, values)
    s0 = 0.9 ** 3 * 0.01 + (1 - 0.9 ** 3) * 0.5  # n = 3 entries, mean 0.5
    s1 = 0.9 * 0.01 + 0.1 * 0.4
    s2 = 0.9 * 0.01 + 0.1 * 0.8
    assert score.scores.tolist() == pytest.approx([s0, s1, s2, 0.01, 0.02], rel=1e-6)
    score.update(torch.tensor([1]), torch.tensor([0.1]))
    assert score.scores[1].item() == pytest.approx(0.9 * s1 + 0.1 * 0.1, rel=1e-6)
    assert score.scores[0].item() == pytest.approx(s0, rel=1e-6)


def test_group_means_give_one_entry_per_instance():
    values = torch.tensor([0.2, 0.4, 0.9, 0.3, 0.5])
    labels = torch.tensor([3, 3, 1, 3, 3])
    instances = torch.tensor([7, 7, 2, 9, 9])  # two instances of class 3, one of class 1
    got_labels, got_values = group_means(values, labels, instances)
    assert got_labels.tolist() == [1, 3, 3]
    assert got_values.tolist() == pytest.approx([0.9, 0.3, 0.4])


def test_state_dict_round_trip_restores_the_vector():
    score = MeanScore(num_classes=5)
    score.update(torch.tensor([0, 3, 3]), torch.tensor([0.7, 0.2, 0.6]))
    state = score.state_dict()
    assert set(state) == {'scores'}
    restored = MeanScore(num_classes=5)
    restored.load_state_dict(state)
    assert torch.equal(restored.scores, score.scores)


def test_prior_indicator_and_builder():
    prior = build_indicator(dict(type='ClassPrior', bg_score=0.05, class_counts=[3, 1, 0, 4]), 4)
    assert isinstance(prior, ClassPrior) and prior.is_set
    assert prior.scores.tolist() == pytest.approx([3 / 8, 1 / 8, 0.0, 4 / 8, 0.05])
    prior.update(torch.tensor([0]), torch.tensor([1.0]))  # fixed: no change
    assert prior.scores[0].item() == pytest.approx(3 / 8)
    assert not build_indicator(dict(type='ClassPrior'), 4).is_set
    with pytest.raises(ValueError, match='class_counts has 3 entries'):
        build_indicator(dict(type='ClassPrior', class_counts=[1, 2, 3]), 4)
    with pytest.raises(KeyError, match='accuracy'):
        build_indicator(dict(type='accuracy'), 4)
    with pytest.raises(ValueError, match="write type='MeanScore'"):
        build_indicator(dict(type='mean_score'), 4)


def test_an_indicator_of_your_own_is_built_through_the_registry():
    """No edit of loce: a registered class with the interface (scores buffer, update)."""
    from mmdet.registry import MODELS
    from torch import nn

    @MODELS.register_module(force=True)
    class ConstantIndicator(nn.Module):
        def __init__(self, num_classes, value=0.5):
            super().__init__()
            self.register_buffer('scores', torch.full((num_classes + 1,), value))

        def update(self, labels, values):
            pass

    built = build_indicator(dict(type='ConstantIndicator', value=0.25), 3)
    assert isinstance(built, ConstantIndicator) and built.scores.tolist() == [0.25] * 4


BATCHES = {  # different lengths per rank: the gather pads them
    0: (torch.tensor([0, 2, 2, 5]), torch.tensor([0.3, 0.6, 0.2, 0.9])),
    1: (torch.tensor([2, 1]), torch.tensor([0.8, 0.5])),
}


def _worker(rank, port, results):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    try:
        score = MeanScore(num_classes=6, alpha=0.8)
        for _ in range(2):
            score.update(*BATCHES[rank])
        results[rank] = score.scores.clone()
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_different_batches_end_identical(free_port):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port, results), nprocs=2)
    assert torch.equal(results[0], results[1])
    # Eq. 2 by hand over both ranks' entries, two iterations: s_c <- a^n s_c + (1 - a^n) mean_c
    # for the n entries of class c; absent classes and the background keep their value.
    entries = {}
    for rank in (0, 1):
        for label, value in zip(*BATCHES[rank]):
            entries.setdefault(int(label), []).append(float(value))
    expected = [0.01] * 7
    for _ in range(2):
        for c, values in entries.items():
            decay = 0.8 ** len(values)
            expected[c] = decay * expected[c] + (1 - decay) * sum(values) / len(values)
    torch.testing.assert_close(results[0], torch.tensor(expected))
