"""GT-box classification statistics on a tiny Mask R-CNN (ResNet-18, no pretrained weights)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.hub import get_config
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

from loce.evaluation import gt_classification_stats

NUM_CLASSES = 5
CAT_IDS = [11, 4, 27, 9, 15]


def tiny_mask_rcnn():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    model = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py').model
    model.backbone.update(depth=18, init_cfg=None)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=32)
    model.rpn_head.update(in_channels=32, feat_channels=32)
    model.roi_head.bbox_roi_extractor.out_channels = 32
    model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64, num_classes=NUM_CLASSES)
    model.roi_head.mask_roi_extractor.out_channels = 32
    model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32,
                                    num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    return MODELS.build(model)


def fake_batch(boxes_per_image, labels_per_image, scale, rescaled):
    """Batch as a test dataloader yields it; boxes in original coordinates unless ``rescaled``."""
    from mmdet.structures import DetDataSample

    inputs, samples = [], []
    generator = torch.Generator().manual_seed(1)
    for boxes, labels in zip(boxes_per_image, labels_per_image):
        ori_h, ori_w = 60, 80
        h, w = int(ori_h * scale), int(ori_w * scale)
        inputs.append(torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(ori_h, ori_w),
                                             scale_factor=(scale, scale)))
        boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        sample.gt_instances = InstanceData(bboxes=boxes * scale if rescaled else boxes,
                                           labels=torch.tensor(labels, dtype=torch.int64))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


BOXES = [[[5, 5, 40, 30], [20, 10, 70, 55], [1, 30, 25, 58]],
         [[10, 12, 50, 50], [30, 2, 78, 40]]]
LABELS = [[0, 2, 2], [4, 2]]


def test_known_head_gives_known_scores_and_accuracy():
    model = tiny_mask_rcnn()
    fc_cls = model.roi_head.bbox_head.fc_cls
    bias = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, 1.5])  # argmax: class 2
    with torch.no_grad():
        fc_cls.weight.zero_()
        fc_cls.bias.copy_(bias)
    batches = [fake_batch(BOXES, LABELS, 2.0, rescaled=False)]

    stats = gt_classification_stats(model, batches, cat_ids=CAT_IDS, gt_in_original_scale=True)

    softmax = torch.softmax(bias.double(), 0).numpy()
    assert stats['val_instances'].tolist() == [1, 0, 3, 0, 1]
    present = stats['val_instances'] > 0
    np.testing.assert_allclose(stats['mean_score'][present], softmax[:NUM_CLASSES][present],
                               rtol=1e-6)
    assert stats['accuracy'][present].tolist() == [0.0, 1.0, 0.0]
    assert np.isnan(stats['mean_score'][~present]).all()
    assert np.isnan(stats['accuracy'][~present]).all()
    assert stats['cat_ids'].tolist() == CAT_IDS


def test_background_argmax_counts_as_wrong():
    model = tiny_mask_rcnn()
    fc_cls = model.roi_head.bbox_head.fc_cls
    with torch.no_grad():
        fc_cls.weight.zero_()
        fc_cls.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.5, 3.0]))  # background wins
    stats = gt_classification_stats(model, [fake_batch(BOXES, LABELS, 1.0, False)],
                                    cat_ids=CAT_IDS, gt_in_original_scale=True)
    assert np.nansum(stats['correct']) == 0


def test_matches_manual_per_box_computation_and_scale_handling():
    """Random head: per-class mean of the GT-class softmax equals a box-by-box computation
    through the RoI head; original-scale GT with scale_factor equals pre-scaled GT."""
    from mmdet.structures.bbox import bbox2roi

    model = tiny_mask_rcnn().eval()
    scale = 1.5
    original = gt_classification_stats(model, [fake_batch(BOXES, LABELS, scale, False)],
                                        cat_ids=CAT_IDS, gt_in_original_scale=True)
    prescaled = gt_classification_stats(model, [fake_batch(BOXES, LABELS, scale, True)],
                                        cat_ids=CAT_IDS, gt_in_original_scale=False)
    for key in ('val_instances', 'score_sum', 'correct'):
        np.testing.assert_array_equal(original[key], prescaled[key])

    sums, hits, counts = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
    with torch.no_grad():
        data = model.data_preprocessor(fake_batch(BOXES, LABELS, scale, True), False)
        feats = model.extract_feat(data['inputs'])
        for i, (boxes, labels) in enumerate(zip(BOXES, LABELS)):
            rois = bbox2roi([torch.tensor(boxes, dtype=torch.float32) * scale])
            full = bbox2roi([s.gt_instances.bboxes for s in data['data_samples']])
            # the box's features do not depend on the other boxes in the batch
            cls_score = model.roi_head._bbox_forward(feats, full)['cls_score']
            offset = sum(len(b) for b in BOXES[:i])
            own = model.roi_head._bbox_forward(
                tuple(f[i:i + 1] for f in feats), rois)['cls_score']
            torch.testing.assert_close(own, cls_score[offset:offset + len(boxes)])
            for score, label in zip(own.double().softmax(1), labels):
                sums[label] += score[label].item()
                hits[label] += float(score.argmax().item() == label)
                counts[label] += 1
    assert original['val_instances'].tolist() == counts.astype(int).tolist()
    np.testing.assert_allclose(original['score_sum'], sums, rtol=1e-5)
    np.testing.assert_array_equal(original['correct'], hits)
    ok = counts > 0
    np.testing.assert_allclose(original['mean_score'][ok], sums[ok] / counts[ok], rtol=1e-5)
    np.testing.assert_allclose(original['accuracy'][ok], hits[ok] / counts[ok])


def test_pipeline_order_decides_box_scaling():
    from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs, Resize
    from mmcv.transforms import LoadImageFromFile

    from loce.evaluation.classification_stats import _annotations_follow_resize

    def dataset(*transforms):
        return SimpleNamespace(pipeline=SimpleNamespace(transforms=list(transforms)))

    test_style = dataset(LoadImageFromFile(), Resize(scale=(64, 64)), LoadAnnotations(),
                         PackDetInputs())
    train_style = dataset(LoadImageFromFile(), LoadAnnotations(), Resize(scale=(64, 64)),
                          PackDetInputs())
    assert _annotations_follow_resize(test_style) is True
    assert _annotations_follow_resize(train_style) is False
    with pytest.raises(ValueError, match='LoadAnnotations'):
        _annotations_follow_resize(dataset(LoadImageFromFile(), PackDetInputs()))


def test_rejects_category_count_mismatch():
    model = tiny_mask_rcnn()
    with pytest.raises(ValueError, match='disagree'):
        gt_classification_stats(model, [], cat_ids=CAT_IDS[:3], gt_in_original_scale=True)


def _write_lvis(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    (tmp_path / 'val2017').mkdir()
    images, anns = [], []
    for img_id, (h, w) in enumerate([(60, 80), (72, 64), (50, 90)], start=1):
        cv2.imwrite(str(tmp_path / 'val2017' / f'{img_id:012d}.jpg'),
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append(dict(
            id=img_id, height=h, width=w,
            coco_url=f'http://images.cocodataset.org/val2017/{img_id:012d}.jpg',
            neg_category_ids=[], not_exhaustive_category_ids=[]))
        for k in range(3):
            x, y = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
            bw, bh = float(rng.uniform(8, w / 2)), float(rng.uniform(8, h / 2))
            anns.append(dict(id=len(anns) + 1, image_id=img_id,
                             category_id=CAT_IDS[(img_id + k) % NUM_CLASSES],
                             bbox=[x, y, bw, bh], area=bw * bh,
                             segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
    cats = [dict(id=c, name=f'cat{c}', frequency='rcf'[i % 3]) for i, c in enumerate(CAT_IDS)]
    path = tmp_path / 'lvis_v1_val.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return path


def test_real_lvis_dataloader_test_and_train_style_pipelines_agree(tmp_path):
    """Through mmdet's LVISV1Dataset: cat_ids and the scale convention come from the dataset,
    and the mmdet test pipeline (GT loaded after Resize) gives the same numbers as a pipeline
    that resizes the GT with the image."""
    from mmdet.datasets import LVISV1Dataset

    ann_file = _write_lvis(tmp_path)
    model = tiny_mask_rcnn()
    resize = dict(type='Resize', scale=(128, 96), keep_ratio=True)
    load = dict(type='LoadAnnotations', with_bbox=True)
    pack = dict(type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
    results = []
    for pipeline in ([dict(type='LoadImageFromFile'), resize, load, pack],
                     [dict(type='LoadImageFromFile'), load, resize, pack]):
        dataset = LVISV1Dataset(
            data_root=str(tmp_path), ann_file=ann_file.name, data_prefix=dict(img=''),
            metainfo=dict(classes=tuple(f'cat{c}' for c in CAT_IDS)), test_mode=True,
            pipeline=pipeline)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=pseudo_collate)
        results.append(gt_classification_stats(model, loader))
    wrong_scale = gt_classification_stats(model, loader, gt_in_original_scale=True)
    test_style, train_style = results
    assert test_style['cat_ids'].tolist() == CAT_IDS
    assert test_style['classes'].tolist() == [f'cat{c}' for c in CAT_IDS]
    assert test_style['val_instances'].sum() == 9
    for key in ('val_instances', 'correct'):
        np.testing.assert_array_equal(test_style[key], train_style[key])
    np.testing.assert_allclose(test_style['score_sum'], train_style['score_sum'], rtol=1e-6)
    assert np.abs(wrong_scale['score_sum'] - train_style['score_sum']).max() > 1e-4
