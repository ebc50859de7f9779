"""The warm-up pass is class-balanced and splits evenly across ranks; the prior counts
instances; the hook refuses a model without LOCERoIHead; max_images cuts the pass short. (Filling the memory before training and
keeping the mean score on resume are checked through the Runner in test_loce_roi_head.py.)"""
from types import SimpleNamespace

import pytest
from torch import nn

from loce.engine.memory_warmup_hook import (MemoryWarmupHook, class_balanced_indices,
                                            class_instance_counts)
from loce.models.loce_roi_head import LOCERoIHead


class Dataset:
    """Image i holds the listed labels (one entry per instance)."""

    def __init__(self, labels_per_image):
        self.labels_per_image = labels_per_image

    def __len__(self):
        return len(self.labels_per_image)

    def get_cat_ids(self, index):
        return self.labels_per_image[index]


DATA = Dataset([[0, 0, 2], [1], [], [0], [2, 1], [0], [0, 2]])


def test_single_process_takes_images_per_class_in_dataset_order_cycling_short_lists():
    # class 0: images 0,3,5,6; class 1: 1,4 (cycled); class 2: 0,4,6
    assert class_balanced_indices(DATA, 3) == [0, 3, 5, 1, 4, 1, 0, 4, 6]


def test_ranks_get_disjoint_equal_shares():
    shares = [class_balanced_indices(DATA, 2, rank, 2) for rank in range(2)]
    assert shares == [[0, 5, 1, 1, 0, 6], [3, 6, 4, 4, 4, 0]]
    assert len(shares[0]) == len(shares[1])  # same number of batches: the update is collective


def test_instance_counts_per_class():
    assert class_instance_counts(DATA, 4) == [5, 2, 3, 0]


def test_hook_needs_loce_roi_head():
    runner = SimpleNamespace(model=SimpleNamespace(roi_head=object()))
    with pytest.raises(TypeError, match='LOCERoIHead'):
        MemoryWarmupHook().before_train(runner)
    with pytest.raises(ValueError, match='images_per_class'):
        MemoryWarmupHook(images_per_class=0)


class _Items(Dataset):
    def __getitem__(self, index):
        return index


class _Model(nn.Module):
    """Records which images each warm-up forward saw."""

    def __init__(self, head):
        super().__init__()
        self.roi_head, self.seen = head, []

    def data_preprocessor(self, batch, training):
        return dict(batch=batch)

    def forward(self, batch, mode):
        self.seen.append(list(batch))


def _runner(images_per_class, max_images):
    head = LOCERoIHead.__new__(LOCERoIHead)
    nn.Module.__init__(head)
    head.memory = []  # a memory is present: the pass runs whatever the loss
    head.indicator = SimpleNamespace()
    head.bbox_head = SimpleNamespace(loss_cls=None, num_classes=3)
    data = _Items(DATA.labels_per_image)
    loader = SimpleNamespace(dataset=data, batch_size=2, num_workers=0, collate_fn=list)
    runner = SimpleNamespace(model=_Model(head), train_dataloader=loader, iter=0,
                             logger=SimpleNamespace(info=lambda message: None))
    MemoryWarmupHook(images_per_class=images_per_class, max_images=max_images).before_train(runner)
    return runner.model.seen


def test_max_images_cuts_the_pass_to_its_first_images():
    # the uncut pass is class_balanced_indices(DATA, 3) == [0, 3, 5, 1, 4, 1, 0, 4, 6]
    assert _runner(3, None) == [[0, 3], [5, 1], [4, 1], [0, 4], [6]]
    assert _runner(3, 3) == [[0, 3], [5]]
    with pytest.raises(ValueError, match='max_images'):
        MemoryWarmupHook(max_images=0)
