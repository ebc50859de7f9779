"""Per-class training statistics for the losses that need them (EQL, BAGS, balanced softmax, ECM).

Their reference code reads the statistics from files made from the LVIS annotation json
(`image_count_frequency`, `instance_count`). Here they are counted, before the first iteration,
from the training dataset the loader reads, so any dataset works (the smoke data is generated at
run time) and no config names a file. They are counted over the annotated images after the
loader's filters, not over the resampled stream of ClassBalancedDataset (RFS): the references'
statistics are those of the annotation file whatever the sampler.

A loss receives them through `set_class_statistics(image_counts, instance_counts, num_images)`
(not ClassPrior's `set_class_counts(class_counts)`, which takes instance counts alone) and keeps what it needs in registered buffers, so they are in every checkpoint and the test-time
scoring that depends on them (BAGS's groups) is right after loading. A loss that needs them and
never got them raises, naming this hook. The hook runs in `before_train` (after load_from and
resume, like MemoryWarmupHook), so a resumed run gets the same statistics again.
"""
from mmdet.registry import HOOKS
from mmengine.dataset import ClassBalancedDataset, RepeatDataset
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .memory_warmup_hook import class_instance_counts


def class_image_counts(dataset, num_classes):
    """Images containing each class, and the number of images with at least one instance (the
    denominator of the references' image-count frequency)."""
    counts = [0] * num_classes
    annotated = 0
    for index in range(len(dataset)):
        labels = set(dataset.get_cat_ids(index))
        annotated += bool(labels)
        for label in labels:
            if not 0 <= label < num_classes:
                raise ValueError(f'training image {index} has class {label}, the loss has '
                                 f'num_classes={num_classes}: set the bbox head and loss_cls '
                                 "num_classes to the dataset's number of classes")
            counts[label] += 1
    return counts, annotated


def annotated_dataset(dataset):
    """The dataset under the resampling wrappers: each annotated image once."""
    while isinstance(dataset, (ClassBalancedDataset, RepeatDataset)):
        dataset = dataset.dataset
    return dataset


def statistics_consumers(model):
    """(name, module) for every module of the model that takes class statistics."""
    return [(name, module) for name, module in model.named_modules()
            if callable(getattr(module, 'set_class_statistics', None))]


@HOOKS.register_module()
class ClassStatisticsHook(Hook):
    """Count images and instances per class over the training set and hand them to every module
    of the model that has `set_class_statistics`."""

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        consumers = statistics_consumers(model)
        if not consumers:
            raise TypeError('ClassStatisticsHook: no module of the model has '
                            'set_class_statistics (EqualizationLoss, GroupSoftmaxLoss, '
                            'BalancedSoftmaxLoss, EffectiveClassMarginLoss); remove the hook')
        dataset = annotated_dataset(runner.train_dataloader.dataset)
        counted = {}
        for name, module in consumers:
            num_classes = module.num_classes
            if num_classes not in counted:
                image_counts, num_images = class_image_counts(dataset, num_classes)
                counted[num_classes] = dict(
                    image_counts=image_counts,
                    instance_counts=class_instance_counts(dataset, num_classes),
                    num_images=num_images)
            stats = counted[num_classes]
            module.set_class_statistics(**stats)
            runner.logger.info(
                f'class statistics for {name} ({type(module).__name__}): '
                f'{stats["num_images"]} images, '
                f'{sum(stats["instance_counts"])} instances, {num_classes} classes, '
                f'{sum(c == 0 for c in stats["image_counts"])} classes without an image')
