"""Per-class learning-status indicators that steer EBL and MFS (paper Sec. 3.1, Table 1).

Two indicators share one interface (a `scores` buffer of C+1 entries, background last, and an
`update(labels, values)` method):

- `MeanScore`, the paper's mean classification score (Eq. 2), tracked during fine-tuning;
- `ClassPrior`, the dataset prior P(y) from per-class instance counts (Table 1, last row).

Both are registered in MMDetection's MODELS registry: LOCERoIHead builds
`roi_head.indicator=dict(type='MeanScore', ...)` through it, so an indicator of your own is one
registered class with that interface, no edit of this package. Both keep their vector in a
registered buffer, so it is saved in checkpoints and restored on resume (the authors' code kept
the mean score in a plain attribute and lost it on resume).
"""
import torch
import torch.distributed as dist
from mmdet.registry import MODELS
from torch import nn

INITIAL_SCORE = 0.01  # the authors' initial value for every entry


def gather_entries(labels, values):
    """Every rank's (label, value) entries, concatenated in rank order, identical on all ranks.

    The lengths differ between ranks, so they are gathered first and the entries padded to the
    longest (label -1, value 0), as the authors' `collect_tensor_from_dist` does; padding is
    dropped again. Every rank then applies the same update to the same data, which keeps the
    mean score identical across ranks without an all-reduce of the vector itself.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return labels, values
    world_size = dist.get_world_size()
    length = torch.tensor([labels.numel()], dtype=torch.long, device=labels.device)
    lengths = [torch.zeros_like(length) for _ in range(world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(n.item() for n in lengths))
    padded_labels = labels.new_full((longest,), -1)
    padded_values = values.new_zeros((longest,))
    padded_labels[:labels.numel()] = labels
    padded_values[:values.numel()] = values
    all_labels = [torch.empty_like(padded_labels) for _ in range(world_size)]
    all_values = [torch.empty_like(padded_values) for _ in range(world_size)]
    dist.all_gather(all_labels, padded_labels)
    dist.all_gather(all_values, padded_values)
    labels, values = torch.cat(all_labels), torch.cat(all_values)
    keep = labels >= 0
    return labels[keep], values[keep]


def group_means(values, labels, groups):
    """One (label, mean value) entry per group id; every member of a group has one label.

    Used for the per-GT-instance mean probability over its positive RoIs, and for the per-class
    mean over the memory features sampled this iteration (groups = labels there).
    """
    if groups.numel() == 0:
        return labels.new_zeros((0,)), values.new_zeros((0,))
    unique, inverse = torch.unique(groups, return_inverse=True)
    sums = values.new_zeros(len(unique)).index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=len(unique)).to(values.dtype)
    group_labels = labels.new_zeros(len(unique)).scatter_(0, inverse, labels)
    return group_labels, sums / counts


def blend_per_class(scores, labels, values, alpha):
    """The authors' form of Eq. 2 for a batch: s_c <- a^n s_c + (1 - a^n) mean_c, with n the
    number of entries of class c and mean_c their mean (about n EMA steps towards the mean).
    Classes without entries keep their score."""
    num = len(scores)
    counts = torch.bincount(labels, minlength=num).to(scores.dtype)
    sums = scores.new_zeros(num).index_add_(0, labels, values.to(scores.dtype))
    present = counts > 0
    decay = torch.pow(torch.full_like(scores, alpha), counts)
    means = sums / counts.clamp(min=1)
    return torch.where(present, decay * scores + (1 - decay) * means, scores)


def class_prior_scores(class_counts, bg_score):
    """P(y) over the C foreground classes from instance counts, then the fixed background."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError('class_counts must be a non-empty list of non-negative per-class '
                         f'instance counts with a positive sum, got {class_counts!r}')
    prior = counts / counts.sum()
    return torch.cat([prior, prior.new_tensor([bg_score])]).float()


@MODELS.register_module()
class MeanScore(nn.Module):
    """The mean classification score s (C+1 entries, background last, pinned to bg_score)."""

    def __init__(self, num_classes, alpha=0.9, bg_score=0.01):
        super().__init__()
        if not 0 <= alpha < 1:
            raise ValueError(f'indicator alpha={alpha}: must be in [0, 1)')
        if not 0 < bg_score <= 1:
            raise ValueError(f'indicator bg_score={bg_score}: must be in (0, 1]')
        self.num_classes = num_classes
        self.alpha = alpha
        self.bg_score = bg_score
        scores = torch.full((num_classes + 1,), INITIAL_SCORE)
        scores[-1] = bg_score
        self.register_buffer('scores', scores)

    @torch.no_grad()
    def update(self, labels, values):
        """Apply one iteration's entries from all ranks (collective: every rank must call it)."""
        labels, values = gather_entries(labels.long(), values.float())
        self.scores.copy_(blend_per_class(self.scores, labels, values, self.alpha))
        self.scores[-1] = self.bg_score

    def extra_repr(self):
        return f'num_classes={self.num_classes}, alpha={self.alpha}, bg_score={self.bg_score}'


@MODELS.register_module()
class ClassPrior(nn.Module):
    """P(y) as the indicator. Counts come from the config or, when omitted, from the training set
    (MemoryWarmupHook counts its instances before fine-tuning); until then `is_set` is False."""

    def __init__(self, num_classes, bg_score=0.01, class_counts=None):
        super().__init__()
        if not 0 < bg_score <= 1:
            raise ValueError(f'indicator bg_score={bg_score}: must be in (0, 1]')
        self.num_classes = num_classes
        self.bg_score = bg_score
        self.register_buffer('class_counts', torch.zeros(num_classes))
        self.register_buffer('scores', torch.full((num_classes + 1,), INITIAL_SCORE))
        self.scores[-1] = bg_score
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def is_set(self):
        return bool(self.class_counts.sum() > 0)

    @torch.no_grad()
    def set_class_counts(self, class_counts):
        counts = torch.as_tensor(class_counts, dtype=torch.float32)
        if counts.shape != (self.num_classes,):
            raise ValueError(f'indicator class_counts has {counts.numel()} entries, the bbox head '
                             f'has num_classes={self.num_classes}: give one count per class')
        self.scores.copy_(class_prior_scores(counts, self.bg_score))
        self.class_counts.copy_(counts)

    def update(self, labels, values):
        """The prior is fixed: nothing to learn from the batch."""

    def extra_repr(self):
        return f'num_classes={self.num_classes}, bg_score={self.bg_score}'


def build_indicator(cfg, num_classes):
    """`roi_head.indicator` config -> module through the registry, with the head's class count."""
    cfg = dict(cfg)
    renamed = {'mean_score': 'MeanScore', 'prior': 'ClassPrior'}
    if cfg.get('type') in renamed:
        raise ValueError(f"roi_head.indicator.type={cfg['type']!r}: the indicators are registered "
                         f"modules now; write type={renamed[cfg['type']]!r}")
    try:
        return MODELS.build(dict(cfg, num_classes=num_classes))
    except (KeyError, TypeError) as err:
        raise type(err)(f'roi_head.indicator={cfg}: {err}') from err
