"""Memory warm-up before LOCE fine-tuning (the authors' InitializerHook, as a registered hook).

Without it the feature memory starts empty and MFS adds nothing for the classes not yet seen,
which are exactly the rare ones. So before the first iteration the hook runs the training
forward (no gradients, model in eval mode) over a class-balanced pass of the training set:
`images_per_class` images per category (the authors use 5: 5 images x 16 boxes >= 80 slots).
As in the authors' code this also moves the mean score towards the pretrained model's scores.

It runs in `before_train`, which mmengine 0.10.7 calls inside the train loop, after
Runner.train() has applied load_from / resume (`load_or_resume`). On resume (runner.iter > 0)
the memory, which is not checkpointed, is refilled, and the restored indicator is kept as is.
If the indicator is a dataset prior without class_counts, the hook counts the training
instances per class first.
"""
import math
from collections import defaultdict

import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.utils.data import DataLoader, Subset

from ..models.loce_roi_head import LOCERoIHead
from ..models.mean_score import ClassPrior


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


@HOOKS.register_module()
class MemoryWarmupHook(Hook):
    """Fill LOCERoIHead's feature memory before fine-tuning starts or resumes."""

    def __init__(self, images_per_class=5, log_interval=100):
        if images_per_class < 1:
            raise ValueError(f'MemoryWarmupHook images_per_class={images_per_class}: must be >= 1')
        self.images_per_class = images_per_class
        self.log_interval = log_interval

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        head = getattr(model, 'roi_head', None)
        if not isinstance(head, LOCERoIHead):
            raise TypeError('MemoryWarmupHook needs model.roi_head of type LOCERoIHead, got '
                            f'{type(head).__name__}: remove the hook or use LOCERoIHead')
        dataset = runner.train_dataloader.dataset
        if isinstance(head.indicator, ClassPrior) and not head.indicator.is_set:
            head.indicator.set_class_counts(
                class_instance_counts(dataset, head.bbox_head.num_classes))
            runner.logger.info('indicator: dataset prior from the training instance counts')
        if head.memory is None:
            return
        rank, world_size = get_dist_info()
        indices = class_balanced_indices(dataset, self.images_per_class, rank, world_size)
        loader = runner.train_dataloader
        # with a batch sampler (mmdet's AspectRatioBatchSampler) DataLoader.batch_size is None
        batch_size = loader.batch_size or loader.batch_sampler.batch_size
        warmup_loader = DataLoader(Subset(dataset, indices), batch_size=batch_size,
                                   shuffle=False, num_workers=loader.num_workers,
                                   collate_fn=loader.collate_fn)
        restored = head.indicator.scores.clone() if runner.iter > 0 else None
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for step, batch in enumerate(warmup_loader, 1):
                model(**model.data_preprocessor(batch, True), mode='loss')
                if step % self.log_interval == 0:
                    runner.logger.info(f'memory warm-up: {step}/{len(warmup_loader)} batches')
        model.train(was_training)
        if restored is not None:
            head.indicator.scores.copy_(restored)
        runner.logger.info(f'memory warm-up: {len(indices)} images, {len(head.memory)} '
                           'features in memory'
                           + (', indicator kept as restored' if restored is not None else ''))
