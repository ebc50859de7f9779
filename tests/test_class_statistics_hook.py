"""ClassStatisticsHook counts images and instances per class over the annotated training images
(under any RFS wrapper), hands them to every loss that takes them, and refuses to run where no
module takes them."""
import logging
from types import SimpleNamespace

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.dataset import BaseDataset, ClassBalancedDataset
from mmengine.registry import init_default_scope

import loce  # noqa: F401  (registers the losses and the hook)
from loce.engine.class_statistics_hook import (ClassStatisticsHook, annotated_dataset,
                                               class_image_counts)

# labels of the instances of each image; image 3 has none
IMAGES = [[0, 0, 2], [2], [1, 2, 2, 2], [], [0, 3]]
NUM_CLASSES = 4


class _Images(BaseDataset):
    def load_data_list(self):
        return [dict(instances=[dict(bbox_label=c) for c in labels]) for labels in IMAGES]

    def get_cat_ids(self, idx):
        return [inst['bbox_label'] for inst in self.get_data_info(idx)['instances']]


def _dataset():
    return _Images(ann_file='', serialize_data=False)


def test_images_and_instances_are_counted_per_class():
    counts, annotated = class_image_counts(_dataset(), NUM_CLASSES)
    assert counts == [2, 1, 3, 1] and annotated == 4  # the empty image is not annotated


def test_the_rfs_stream_is_unwrapped_to_the_annotated_images():
    images = _dataset()
    rfs = ClassBalancedDataset(images, oversample_thr=0.5)
    assert len(rfs) > len(images)  # classes 1 and 3 are in 1 of 5 images: repeated
    assert annotated_dataset(rfs) is images


def _runner(model, dataset):
    return SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset),
                           logger=logging.getLogger('test_class_statistics_hook'))


def _head(loss_cfg):
    init_default_scope('mmdet')
    return MODELS.build(dict(type='Shared2FCBBoxHead', in_channels=2, fc_out_channels=4,
                             roi_feat_size=1, num_classes=NUM_CLASSES, loss_cls=loss_cfg))


def test_every_consumer_gets_the_statistics_it_uses():
    model = torch.nn.ModuleDict(dict(
        eql=_head(dict(type='EqualizationLoss', num_classes=NUM_CLASSES)),
        bags=_head(dict(type='GroupSoftmaxLoss', num_classes=NUM_CLASSES)),
        ecm=_head(dict(type='EffectiveClassMarginLoss', num_classes=NUM_CLASSES))))
    ClassStatisticsHook().before_train(
        _runner(model, ClassBalancedDataset(_dataset(), oversample_thr=0.5)))
    torch.testing.assert_close(model['eql'].loss_cls.image_frequency,
                               torch.tensor([2, 1, 3, 1]) / 4.0)
    torch.testing.assert_close(model['bags'].loss_cls.instance_counts,
                               torch.tensor([3.0, 1, 5, 1]))
    torch.testing.assert_close(model['ecm'].loss_cls.instance_counts,
                               torch.tensor([3.0, 1, 5, 1]))


def test_a_model_without_consumers_is_a_configuration_error():
    with pytest.raises(TypeError, match='remove the hook'):
        ClassStatisticsHook().before_train(
            _runner(_head(dict(type='CrossEntropyLoss')), _dataset()))


def test_a_class_count_mismatch_names_num_classes():
    head = _head(dict(type='EqualizationLoss', num_classes=NUM_CLASSES))
    head.loss_cls.num_classes = 3  # as if loss_cls.num_classes were left at another dataset's
    with pytest.raises(ValueError, match='num_classes'):
        ClassStatisticsHook().before_train(_runner(head, _dataset()))
