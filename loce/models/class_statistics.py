"""Class statistics kept by the losses that need them, and the checks around them.

ClassStatisticsHook (loce.engine) counts them over the training set and calls each loss's
`set_class_statistics(image_counts, instance_counts, num_images)`; the loss stores what it uses
in a registered buffer (saved in checkpoints). Until then the buffer is all zeros, which no
training set gives, so that is how a loss knows it was never told.
"""
import torch


def as_counts(counts, num_classes, what, owner):
    """Per-class counts as a float64 tensor, or a ValueError naming the mismatch."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.shape != (num_classes,):
        raise ValueError(f'{type(owner).__name__}: {what} has {counts.numel()} entries, the loss '
                         f'has num_classes={num_classes}: set loss_cls.num_classes to the bbox '
                         "head's num_classes")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f'{type(owner).__name__}: {what} must be non-negative with a positive '
                         'sum')
    return counts


def require_statistics(statistic, owner):
    """Raise if the buffer was never set: the loss would silently train on zeros."""
    if not bool(statistic.any()):
        raise RuntimeError(
            f'{type(owner).__name__} has no class statistics: add '
            "dict(type='ClassStatisticsHook') to custom_hooks (it counts them over the training "
            'set before training), or load a checkpoint trained with it')


def require_every_class(counts, what, owner):
    """A loss that divides by a class's count cannot take a class the training set lacks."""
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f'{type(owner).__name__}: classes {missing[:10]} have no {what} in the '
                         'training set; this loss needs every class to occur')


def check_channels(num_classes, expected, owner):
    """The bbox head asks for its classifier width with its own num_classes."""
    if num_classes != expected:
        raise ValueError(f'{type(owner).__name__}(num_classes={expected}) is in a bbox head with '
                         f'num_classes={num_classes}: give the loss the same num_classes')
