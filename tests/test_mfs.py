"""MFS parts: the box generator covers Eq. 5's 16 sign patterns inside the image with IoU >= 4/9,
the memory is a per-class FIFO of M slots in the configured dtype/device, and the sampler draws
classes with probability proportional to 1/s."""
import pytest
import torch
from mmdet.structures.bbox import bbox_overlaps
from scipy.stats import chisquare

from loce.models.mfs import (BOXES_PER_GT, SIGN_PATTERNS, FeatureMemory, jitter_boxes,
                             sample_classes)


def _gts(generator, num, image=(120, 200)):
    h, w = image
    xy = torch.rand(num, 2, generator=generator) * torch.tensor([w * 0.7, h * 0.7])
    wh = torch.rand(num, 2, generator=generator) * torch.tensor([w * 0.3, h * 0.3]) + 2
    return torch.cat([xy, (xy + wh).clamp(max=torch.tensor([w, h]).float())], dim=1)


def test_sixteen_boxes_per_gt_one_per_sign_pattern():
    assert BOXES_PER_GT == 16 and len({tuple(r) for r in SIGN_PATTERNS.tolist()}) == 16
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[40., 30., 100., 90.], [60., 50., 80., 62.]])  # far from the borders
    boxes = jitter_boxes(gt, (200, 200), generator=g).reshape(2, 16, 4)
    offsets = boxes - gt[:, None, :]
    assert torch.equal(torch.sign(offsets), SIGN_PATTERNS.expand(2, 16, 4))
    reach = torch.stack([gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]] * 2, dim=1) / 6
    assert (offsets.abs() <= reach[:, None, :] + 1e-5).all()


def test_boxes_stay_inside_the_image_and_overlap_their_gt():
    g = torch.Generator().manual_seed(1)
    height, width = 120, 200
    gt = _gts(g, 500, (height, width))
    gt[:10, :2] = 0  # GTs touching the borders, where clamping matters
    gt[10:20, 2] = width
    gt[10:20, 3] = height
    boxes = jitter_boxes(gt, (height, width), generator=g)
    assert boxes.shape == (500 * 16, 4)
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
    iou = bbox_overlaps(boxes, gt.repeat_interleave(16, dim=0), is_aligned=True)
    assert iou.min().item() >= 4 / 9 - 1e-5


def _rows(values, shape=(2, 3)):
    """Features whose every element is the row's value, so slots can be read back."""
    values = torch.as_tensor(values, dtype=torch.float32)
    return values[:, None, None].expand(-1, *shape).clone()


def test_memory_is_a_fifo_ring_of_size_m_per_class():
    memory = FeatureMemory(num_classes=3, size=4)
    memory.push(_rows([1, 2, 3]), torch.tensor([0, 0, 0]), torch.zeros(3, 4))
    assert memory.filled.tolist() == [3, 0, 0] and memory.pointers.tolist() == [3, 0, 0]
    memory.push(_rows([4, 5, 6]), torch.tensor([0, 0, 0]), torch.zeros(3, 4))
    # slots 0..3 held 1,2,3,4; 5 and 6 overwrote the two oldest (1, 2)
    assert memory.features[0, :, 0, 0].tolist() == [5, 6, 3, 4]
    assert memory.filled.tolist() == [4, 0, 0] and memory.pointers[0] == 2
    memory.push(_rows(list(range(10, 17))), torch.full((7,), 0), torch.zeros(7, 4))
    # at most M rows of a class per push (the authors' rule): 10..13 written from slot 2 on
    assert memory.features[0, :, 0, 0].tolist() == [12, 13, 10, 11]
    assert memory.filled[0] == 4 and len(memory) == 4


def test_memory_classes_are_isolated():
    memory = FeatureMemory(num_classes=3, size=4)
    targets = torch.arange(12.).reshape(3, 4)
    memory.push(_rows([1, 2, 3]), torch.tensor([0, 2, 0]), targets)
    before = memory.features[0].clone()
    memory.push(_rows([7, 8, 9, 10, 11]), torch.full((5,), 2), torch.zeros(5, 4))
    assert torch.equal(memory.features[0], before)
    assert memory.labels[0].tolist() == [0, 0, -1, -1]
    assert memory.labels[1].tolist() == [-1] * 4
    assert memory.labels[2].tolist() == [2] * 4
    assert memory.targets[0, :2].tolist() == [targets[0].tolist(), targets[2].tolist()]
    features, labels, _ = memory.sample(torch.tensor([2, 1, 0]), per_class=5)
    assert labels.tolist() == [2] * 5 + [0] * 5  # the empty class 1 is skipped
    assert set(features[:5, 0, 0].tolist()) <= {7., 8., 9., 10.}  # 11: beyond M in one push
    assert set(features[5:, 0, 0].tolist()) <= {1., 3.}


def test_memory_honours_dtype_and_device():
    memory = FeatureMemory(num_classes=2, size=3, device='cpu', dtype='float16')
    assert memory.features is None  # nothing is allocated before the first push
    memory.push(_rows([0.1, 0.2]), torch.tensor([1, 1]), torch.ones(2, 4))
    assert memory.features.dtype == torch.float16 and memory.features.device.type == 'cpu'
    assert memory.targets.dtype == torch.float32
    features, _, _ = memory.sample(torch.tensor([1]), per_class=2)
    assert features.dtype == torch.float16
    with pytest.raises(ValueError, match='mfs.dtype'):
        FeatureMemory(num_classes=2, dtype='bfloat8')
    if not torch.cuda.is_available():
        gpu = FeatureMemory(num_classes=2, size=3, device='cuda')
        with pytest.raises(RuntimeError, match="mfs.device='cpu'"):
            gpu.push(_rows([1.]), torch.tensor([0]), torch.ones(1, 4))


def test_memory_bytes_at_lvis_v1_scale():
    per_class_slot = 256 * 7 * 7
    assert FeatureMemory.nbytes(1203, 80, (256, 7, 7), 'float32') == \
        1203 * 80 * (per_class_slot * 4 + 16 + 8)
    assert FeatureMemory.nbytes(1203, 80, (256, 7, 7), 'float16') == \
        1203 * 80 * (per_class_slot * 2 + 16 + 8)


def test_sampler_class_frequencies_follow_inverse_score():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.01, 0.3, 0.01])  # last entry: background
    draws = torch.cat([sample_classes(scores, 8, generator=g) for _ in range(4000)])
    assert draws.max() < len(scores) - 1  # background is never drawn
    observed = torch.bincount(draws, minlength=len(scores) - 1).double()
    inverse = 1 / (scores[:-1].double() + 1e-7)
    expected = inverse / inverse.sum() * len(draws)
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
    # and it is not uniform: the test can tell the difference
    uniform = torch.full_like(observed, len(draws) / len(observed))
    assert chisquare(observed.numpy(), uniform.numpy()).pvalue < 1e-6


def test_kept_rows_are_what_a_push_stores():
    memory, selective = FeatureMemory(num_classes=3, size=2), FeatureMemory(num_classes=3, size=2)
    labels = torch.tensor([0, 0, 2, 0, 2, 2, 1])
    features, targets = _rows(list(range(7))), torch.arange(28.).reshape(7, 4)
    keep = memory.kept_rows(labels)
    assert keep.tolist() == [0, 1, 2, 4, 6]
    memory.push(features, labels, targets)
    selective.push(features[keep], labels[keep], targets[keep])
    for name in ('features', 'targets', 'labels', 'pointers', 'filled'):
        assert torch.equal(getattr(memory, name), getattr(selective, name)), name
