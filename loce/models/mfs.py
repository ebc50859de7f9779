"""Memory-augmented Feature Sampling (MFS, paper Sec. 3.3): its three parts.

1. `jitter_boxes`: 16 dense boxes per GT box (Eq. 5), one for each sign pattern, so the RoI
   features of an instance are varied without depending on the RPN.
2. `FeatureMemory`: a per-class FIFO ring of M RoI features with their regression targets and
   labels. Features can be reused across iterations because the backbone and neck are frozen
   while fine-tuning, so stored features stay consistent with the current network.
3. `sample_classes` + `FeatureMemory.sample`: k classes drawn with replacement with
   p_c proportional to 1/s_c (Eq. 7-8), then m stored features per drawn class.
"""
import itertools
import math

import torch

# Eq. 5's sign patterns over (x1, y1, x2, y2), one row per generated box; the order is the
# authors' (x1's sign changes every 8 boxes, y1's every 4, x2's every 2, y2's every box).
SIGN_PATTERNS = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=4)))
BOXES_PER_GT = len(SIGN_PATTERNS)
SCORE_EPS = 1e-7  # the authors' guard in 1 / (s + eps)
DTYPES = {'float32': torch.float32, 'float16': torch.float16}


def jitter_boxes(gt_bboxes, img_shape, generator=None):
    """(N*16, 4) boxes: GT i's 16 boxes are rows 16i..16i+15, each coordinate moved by
    sign * U(0, 1) * w/6 (x) or h/6 (y), then clamped to the (h, w) image. Without clamping the
    worst box keeps IoU (2/3)^2 = 4/9 with its GT; clamping to an image that holds the GT only
    removes area outside the GT, so IoU >= 4/9 holds for every box (no IoU filter, as the
    authors: some boxes lie below the 0.5 IoU of RPN positives)."""
    gt = gt_bboxes.float().reshape(-1, 4)
    size = gt[:, 2:] - gt[:, :2]
    reach = torch.cat([size, size], dim=1) / 6  # (w, h, w, h) / 6
    uniform = torch.rand((len(gt), BOXES_PER_GT, 4), generator=generator, device=gt.device)
    boxes = gt[:, None, :] + SIGN_PATTERNS.to(gt.device)[None] * uniform * reach[:, None, :]
    height, width = img_shape[:2]
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
    return boxes.reshape(-1, 4)


def sample_classes(scores, num_classes_drawn, available=None, generator=None):
    """Foreground classes drawn with replacement, p_c proportional to 1 / (s_c + 1e-7), from an
    indicator vector of C+1 scores (background last, never drawn). A class drawn twice gives
    twice the features, as with the authors' inverse-CDF draw.

    `available` (C booleans): only these classes are drawn. The authors draw among all classes
    and skip empty queues afterwards, which is the same whenever every queue holds features (on
    LVIS after the warm-up). It differs where a class has no training instance (a subset of
    LVIS): its score stays at its start (0.01, or a prior of 0, weight 1e7) and it would take
    most draws only for them to be dropped, so MFS would add nothing. Empty tensor when no class
    is available."""
    weights = 1.0 / (scores[:-1].detach().double().cpu() + SCORE_EPS)
    if available is not None:
        weights = weights * torch.as_tensor(available, dtype=torch.bool).cpu()
        if not weights.any():
            return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(weights, num_classes_drawn, replacement=True, generator=generator)


class FeatureMemory:
    """Per-class ring buffers of RoI features (M slots each), their regression targets and labels.

    Storage is allocated on the first push, when the feature shape is known, so a model built
    for testing never allocates it; at LVIS v1 scale it is 1203 x 80 x 256x7x7 values (see
    `nbytes`), hence the choice of device (the authors keep features in host memory) and of
    float16. The memory is per process; MemoryWarmupHook fills it before fine-tuning and keeps
    it in the checkpoint when it is small enough (`state_dict` / `load_state_dict`), so a resumed
    run continues with exactly the memory it had.
    """

    def __init__(self, num_classes, size=80, device='cpu', dtype='float32'):
        if size < 1:
            raise ValueError(f'mfs.memory_size={size}: must be at least 1')
        if dtype not in DTYPES:
            raise ValueError(f'mfs.dtype={dtype!r}: use one of {sorted(DTYPES)}')
        self.num_classes = num_classes
        self.size = size
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.features = None  # (C, M, *feature_shape)
        self.targets = None  # (C, M, target_dim), float32
        self.labels = None  # (C, M), -1 where empty
        self.pointers = torch.zeros(num_classes, dtype=torch.long)  # next slot to write
        self.filled = torch.zeros(num_classes, dtype=torch.long)  # valid slots (0..M)

    @staticmethod
    def nbytes(num_classes, size, feature_shape, dtype='float32', target_dim=4):
        """Bytes the storage takes once allocated (features + float32 targets + int64 labels)."""
        per_slot = (math.prod(feature_shape) * DTYPES[dtype].itemsize + target_dim * 4 + 8)
        return num_classes * size * per_slot

    def _allocate(self, feature_shape, target_dim):
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError("mfs.device='cuda' but CUDA is not available: set "
                               "model.roi_head.mfs.device='cpu'")
        shape = (self.num_classes, self.size)
        self.features = torch.zeros(shape + tuple(feature_shape), dtype=self.dtype,
                                    device=self.device)
        self.targets = torch.zeros(shape + (target_dim,), device=self.device)
        self.labels = torch.full(shape, -1, dtype=torch.long, device=self.device)

    def kept_rows(self, labels):
        """Indices of the rows a push stores: the first M of each class, in order. Selecting
        them before RoIAlign saves extracting features that would be dropped (a class with
        more than M/16 GTs in a batch)."""
        labels = labels.detach().cpu()
        rank = torch.zeros(len(labels), dtype=torch.long)
        for label in torch.unique(labels).tolist():
            rows = (labels == label).nonzero()[:, 0]
            rank[rows] = torch.arange(len(rows))
        return (rank < self.size).nonzero()[:, 0]

    def push(self, features, labels, targets):
        """Enqueue a batch: per class at most the first M rows (as the authors), written FIFO
        over the oldest slots."""
        if len(labels) == 0:
            return
        if self.features is None:
            self._allocate(features.shape[1:], targets.shape[1])
        elif features.shape[1:] != self.features.shape[2:]:
            raise ValueError(f'feature shape {tuple(features.shape[1:])} differs from the '
                             f'memory\'s {tuple(self.features.shape[2:])}')
        labels_cpu = labels.detach().cpu()
        if labels_cpu.min() < 0 or labels_cpu.max() >= self.num_classes:
            raise ValueError(f'memory labels must be foreground classes 0..{self.num_classes - 1}')
        for label in torch.unique(labels_cpu).tolist():
            rows = (labels_cpu == label).nonzero()[:self.size, 0]
            count = len(rows)
            slots = (self.pointers[label] + torch.arange(count)) % self.size
            rows_src, slots_dst = rows.to(features.device), slots.to(self.device)
            self.features[label, slots_dst] = features[rows_src].detach().to(self.device,
                                                                              self.dtype)
            self.targets[label, slots_dst] = targets[rows_src].detach().to(self.device,
                                                                            torch.float32)
            self.labels[label, slots_dst] = label
            self.pointers[label] = (self.pointers[label] + count) % self.size
            self.filled[label] = min(int(self.filled[label]) + count, self.size)

    def sample(self, classes, per_class, generator=None):
        """`per_class` stored features of each given class (uniform over its valid slots, with
        replacement); classes with an empty queue are skipped. Returns (features, labels,
        targets) on the memory's device and dtype; empty tensors if nothing was drawn."""
        picked = []
        for label in classes.tolist():
            valid = int(self.filled[label])
            if valid == 0:
                continue
            slots = torch.randint(0, valid, (per_class,), generator=generator)
            picked.append((label, slots.to(self.device)))
        if not picked:
            shape = (0,) if self.features is None else (0,) + tuple(self.features.shape[2:])
            return (torch.zeros(shape, dtype=self.dtype, device=self.device),
                    torch.zeros((0,), dtype=torch.long, device=self.device),
                    torch.zeros((0, 4 if self.targets is None else self.targets.shape[-1]),
                                device=self.device))
        return (torch.cat([self.features[label, slots] for label, slots in picked]),
                torch.cat([self.labels[label, slots] for label, slots in picked]),
                torch.cat([self.targets[label, slots] for label, slots in picked]))

    def state_dict(self):
        """Storage, pointers and fill counts as CPU tensors (None before the first push)."""
        if self.features is None:
            return None
        return {name: getattr(self, name).cpu() for name in
                ('features', 'targets', 'labels', 'pointers', 'filled')}

    def load_state_dict(self, state):
        """Restore what state_dict returned, on this memory's device and dtype."""
        if state is None:
            return
        shape = (self.num_classes, self.size)
        if tuple(state['labels'].shape) != shape:
            raise ValueError(f'checkpointed memory holds {tuple(state["labels"].shape)} slots, '
                             f'this one {shape}: num_classes or mfs.memory_size changed')
        self.features = state['features'].to(self.device, self.dtype)
        self.targets = state['targets'].to(self.device, torch.float32)
        self.labels = state['labels'].to(self.device)
        self.pointers = state['pointers'].clone()
        self.filled = state['filled'].clone()

    @property
    def allocated_bytes(self):
        if self.features is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.features, self.targets, self.labels))

    def __len__(self):
        """Valid features held, all classes together."""
        return int(self.filled.sum())
