"""Warm-up before LOCE fine-tuning (the authors' InitializerHook, as a registered hook).

Without it the feature memory starts empty and MFS adds nothing for the classes not yet seen,
which are exactly the rare ones, and the mean score starts from a uniform 0.01 rather than from
the pretrained model's scores. So before the first iteration the hook runs the training forward
(no gradients, model in eval mode) over a class-balanced pass of the training set:
`images_per_class` images per category (the authors use 5: 5 images x 16 boxes >= 80 slots).
This fills the memory and moves the mean score towards the pretrained model's scores. As in
the authors' code it runs whenever the mean score guides training, with MFS or without it (EBL
alone); only the memory push is skipped without MFS. A plain CE fine-tune, which tracks the
mean score but never uses it, is not warmed up.

It runs in `before_train`, which mmengine 0.10.7 calls inside the train loop, after
Runner.train() has applied load_from / resume (`load_or_resume`). The memory is saved in every
checkpoint while it takes at most `checkpoint_memory_bytes` (1 GiB by default: the smoke and
proxy memories are a few MB, LVIS v1's 2.4-4.5 GiB is above it), so a resumed run restores it
exactly and skips the warm-up; a larger memory is refilled by the warm-up on resume, with the
restored indicator kept as is. If the indicator is a dataset prior without class_counts, the
hook counts the training instances per class first.

`max_images` caps the pass at that many images per process (the first of its class-balanced
order): only for rehearsing a run's code paths in minutes (pipeline: a scale's `length`), since
a capped pass fills the memory for the first classes alone.
"""
import contextlib
import math
import random
from collections import defaultdict

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.utils.data import DataLoader, Subset

from ..models.equilibrium_loss import EquilibriumLoss
from ..models.loce_roi_head import LOCERoIHead
from ..models.indicator import ClassPrior, MeanScore

MEMORY_KEY = 'loce_feature_memory'


def class_balanced_indices(dataset, images_per_class, rank=0, world_size=1):
    """Dataset indices for this rank: for each category (in label order), images containing it in
    dataset order, cycled to images_per_class * world_size and strided by rank, so every rank gets
    images_per_class per category and the same number of batches (the mean-score update is a
    collective). Images without instances are left out: they have nothing to store."""
    by_class = defaultdict(list)
    for index in range(len(dataset)):
        for label in sorted(set(dataset.get_cat_ids(index))):
            by_class[label].append(index)
    total = images_per_class * world_size
    indices = []
    for label in sorted(by_class):
        members = by_class[label]
        indices += (members * math.ceil(total / len(members)))[:total][rank::world_size]
    return indices


def class_instance_counts(dataset, num_classes):
    """Annotated instances per class over the dataset as the training loader sees it."""
    counts = [0] * num_classes
    for index in range(len(dataset)):
        for label in dataset.get_cat_ids(index):
            counts[label] += 1
    return counts


@contextlib.contextmanager
def _random_state_kept(keep):
    """Restore the Python, NumPy and torch generators after the block (when `keep`)."""
    if not keep:
        yield
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@HOOKS.register_module()
class MemoryWarmupHook(Hook):
    """Fill LOCERoIHead's feature memory before fine-tuning starts or resumes."""

    def __init__(self, images_per_class=5, log_interval=100, checkpoint_memory_bytes=1 << 30,
                 max_images=None):
        if images_per_class < 1:
            raise ValueError(f'MemoryWarmupHook images_per_class={images_per_class}: must be >= 1')
        if max_images is not None and max_images < 1:
            raise ValueError(f'MemoryWarmupHook max_images={max_images}: must be >= 1 or None')
        self.images_per_class = images_per_class
        self.max_images = max_images
        self.log_interval = log_interval
        self.checkpoint_memory_bytes = checkpoint_memory_bytes
        self._restored_memory = None

    @staticmethod
    def _head(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        head = getattr(model, 'roi_head', None)
        if not isinstance(head, LOCERoIHead):
            raise TypeError('MemoryWarmupHook needs model.roi_head of type LOCERoIHead, got '
                            f'{type(head).__name__}: remove the hook or use LOCERoIHead')
        return model, head

    def before_save_checkpoint(self, runner, checkpoint):
        _, head = self._head(runner)
        memory = head.memory
        if memory is not None and 0 < memory.allocated_bytes <= self.checkpoint_memory_bytes:
            checkpoint[MEMORY_KEY] = memory.state_dict()

    def after_load_checkpoint(self, runner, checkpoint):
        # Checkpoints are written by rank 0 alone: its memory is not the other ranks' memories.
        if runner._resume and get_dist_info()[1] == 1:
            self._restored_memory = checkpoint.get(MEMORY_KEY)

    def before_train(self, runner):
        model, head = self._head(runner)
        dataset = runner.train_dataloader.dataset
        if isinstance(head.indicator, ClassPrior) and not head.indicator.is_set:
            head.indicator.set_class_counts(
                class_instance_counts(dataset, head.bbox_head.num_classes))
            runner.logger.info('indicator: dataset prior from the training instance counts')
        if self._restored_memory is not None:
            head.memory.load_state_dict(self._restored_memory)
            self._restored_memory = None
            runner.logger.info(f'memory warm-up skipped: {len(head.memory)} features restored '
                               'from the checkpoint, indicator as restored')
            return
        guides_loss = isinstance(head.bbox_head.loss_cls, EquilibriumLoss)
        if head.memory is None and not (isinstance(head.indicator, MeanScore) and guides_loss
                                        and runner.iter == 0):
            return
        rank, world_size = get_dist_info()
        indices = class_balanced_indices(dataset, self.images_per_class, rank, world_size)
        indices = indices[:self.max_images]  # the same count on every rank
        loader = runner.train_dataloader
        # with a batch sampler (mmdet's AspectRatioBatchSampler) DataLoader.batch_size is None
        batch_size = loader.batch_size or loader.batch_sampler.batch_size
        warmup_loader = DataLoader(Subset(dataset, indices), batch_size=batch_size,
                                   shuffle=False, num_workers=loader.num_workers,
                                   collate_fn=loader.collate_fn)
        resuming = runner.iter > 0
        restored = head.indicator.scores.clone() if resuming else None
        was_training = model.training
        model.eval()
        # On resume the refill must not move the random streams the rest of the run draws from.
        with torch.no_grad(), _random_state_kept(resuming):
            for step, batch in enumerate(warmup_loader, 1):
                model(**model.data_preprocessor(batch, True), mode='loss')
                if step % self.log_interval == 0:
                    runner.logger.info(f'memory warm-up: {step}/{len(warmup_loader)} batches')
        model.train(was_training)
        if restored is not None:
            head.indicator.scores.copy_(restored)
        held = 'no memory (EBL only)' if head.memory is None else f'{len(head.memory)} features in memory'
        runner.logger.info(f'memory warm-up: {len(indices)} images, {held}'
                           + (', indicator kept as restored' if restored is not None else ''))
