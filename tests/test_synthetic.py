"""pipeline.data.synthetic: LVIS-format, long-tailed by LVIS's own rule, loadable by mmdet's
LVIS datasets and scorable by faster-coco-eval in LVIS mode."""
import copy
import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from pipeline.data.synthetic import (COLOURS, category_design, class_names, frequency_label,
                                     smoke_settings, synthesize)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic') / 'smoke'
    summary = synthesize(root, seed=0, **smoke_settings())
    return root, summary


def _ann(root, version, split):
    return json.loads((root / f'lvis_{version}' / 'annotations' /
                       f'lvis_{version}_{split}.json').read_text())


def _tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
        if path.name != 'synthetic.json':  # it records wall time
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_frequency_is_lvis_rule_on_generated_train(smoke):
    root, summary = smoke
    train = _ann(root, 'v1', 'train')
    images, instances = {}, {}
    for a in train['annotations']:
        images.setdefault(a['category_id'], set()).add(a['image_id'])
        instances[a['category_id']] = instances.get(a['category_id'], 0) + 1
    for c in train['categories']:
        n = len(images[c['id']])
        assert c['image_count'] == n and c['instance_count'] == instances[c['id']]
        assert c['frequency'] == ('r' if n <= 10 else 'c' if n <= 100 else 'f')
        assert c['synset'] and c['name'] and c['synonyms']
    assert summary['frequency'] == {'r': 6, 'c': 6, 'f': 4}
    assert [c['name'] for c in train['categories']] == list(class_names(16)) == summary['classes']
    assert frequency_label(10) == 'r' and frequency_label(11) == 'c'
    assert frequency_label(100) == 'c' and frequency_label(101) == 'f'


def test_rare_classes_share_shape_and_colour_with_frequent_ones(smoke):
    root, _ = smoke
    design = {d['name']: d for d in category_design(16)}
    cats = _ann(root, 'v1', 'train')['categories']
    frequent = [design[c['name']] for c in cats if c['frequency'] == 'f']
    for c in cats:
        if c['frequency'] == 'r':
            d = design[c['name']]
            assert any(f['shape'] == d['shape'] for f in frequent)
            assert any(f['colour'] == d['colour'] for f in frequent)


def test_val_evaluates_every_class(smoke):
    root, _ = smoke
    train, val = _ann(root, 'v1', 'train'), _ann(root, 'v1', 'val')
    assert val['categories'] == train['categories']
    val_images = {}
    for a in val['annotations']:
        val_images.setdefault(a['category_id'], set()).add(a['image_id'])
    assert all(len(val_images.get(c['id'], ())) >= 2 for c in val['categories'])
    assert len(val['images']) == 60 and len(train['images']) == 300


def test_records_are_consistent(smoke):
    root, _ = smoke
    train, val = _ann(root, 'v1', 'train'), _ann(root, 'v1', 'val')
    ids = [i['id'] for i in train['images'] + val['images']]
    assert len(set(ids)) == len(ids)
    ann_ids = [a['id'] for a in train['annotations'] + val['annotations']]
    assert len(set(ann_ids)) == len(ann_ids)
    for data in (train, val):
        present = {}
        for a in data['annotations']:
            present.setdefault(a['image_id'], []).append(a['category_id'])
            xs, ys = a['segmentation'][0][0::2], a['segmentation'][0][1::2]
            x, y, w, h = a['bbox']
            assert (x, y) == (min(xs), min(ys))
            assert w == pytest.approx(max(xs) - x, abs=0.02)
            assert h == pytest.approx(max(ys) - y, abs=0.02)
            assert 0 <= x and x + w <= 128 and 0 <= y and y + h <= 128
            assert 0 < a['area'] <= w * h + 0.05
        for img in data['images']:
            cats = present[img['id']]
            assert 1 <= len(cats) <= 4
            assert img['coco_url'].endswith(f"2017/{img['id']:012d}.jpg")
            assert not set(img['neg_category_ids']) & set(cats)
            assert set(img['not_exhaustive_category_ids']) <= set(cats)
    assert sum(bool(i['not_exhaustive_category_ids']) for i in train['images']) > 0
    assert sum(len(i['neg_category_ids']) for i in train['images']) > len(train['images'])


def test_pixels_show_the_annotated_colour(smoke):
    """The centre of every convex object has the colour its category names."""
    root, _ = smoke
    train = _ann(root, 'v1', 'train')
    names = {c['id']: c['name'] for c in train['categories']}
    checked = 0
    pixels = {}
    for a in train['annotations']:
        colour, shape = names[a['category_id']].split('_')
        if shape not in ('square', 'circle', 'diamond'):
            continue
        if a['image_id'] not in pixels:
            pixels[a['image_id']] = np.asarray(Image.open(
                root / 'lvis_v1' / 'train2017' / f"{a['image_id']:012d}.jpg"), dtype=int)
        x, y, w, h = a['bbox']
        rgb = pixels[a['image_id']][int(y + h / 2), int(x + w / 2)]
        assert np.abs(rgb - COLOURS[colour]).max() <= 45, (a, rgb)
        checked += 1
    assert checked > 300


def test_v05_variant_shares_images_and_annotations(smoke):
    root, _ = smoke
    for split in ('train', 'val'):
        v1, v05 = _ann(root, 'v1', split), _ann(root, 'v0.5', split)
        assert v05['annotations'] == v1['annotations'] and v05['categories'] == v1['categories']
        for a, b in zip(v1['images'], v05['images']):
            assert b['file_name'] == f"COCO_{split}2014_{a['id']:012d}.jpg"
            assert {k: v for k, v in b.items() if k != 'file_name'} == a
            shared = root / 'lvis_v0.5' / f'{split}2017' / b['file_name'][-16:]
            assert shared.resolve() == (root / 'lvis_v1' / a['coco_url'][30:]).resolve()
            assert shared.is_file()


def test_same_seed_same_bytes(smoke, tmp_path):
    root, _ = smoke
    again = synthesize(tmp_path / 'again', seed=0, **smoke_settings())
    assert _tree_digest(tmp_path / 'again') == _tree_digest(root)
    other = synthesize(tmp_path / 'again', seed=1, **smoke_settings())
    assert _tree_digest(tmp_path / 'again') != _tree_digest(root)
    assert other['classes'] == again['classes']


def test_size_categories_and_imbalance_are_parameters(tmp_path):
    summary = synthesize(tmp_path / 'small', seed=3, num_train=160, num_val=30, image_size=96,
                         num_categories=9, head_fraction=0.8, tail_images=1)
    assert summary['frequency'] == {'r': 3, 'c': 3, 'f': 3}
    train = _ann(tmp_path / 'small', 'v1', 'train')
    assert len(train['images']) == 160 and len(train['categories']) == 9
    assert min(c['image_count'] for c in train['categories']) == 1
    assert max(c['image_count'] for c in train['categories']) == 128
    with Image.open(tmp_path / 'small' / 'lvis_v1' / 'train2017' / '000000000001.jpg') as im:
        assert im.size == (96, 96)
    with pytest.raises(ValueError, match='head_fraction'):
        synthesize(tmp_path / 'x', seed=0, num_train=150, head_fraction=0.5)
    with pytest.raises(ValueError, match='num_categories'):
        synthesize(tmp_path / 'x', seed=0, num_categories=65)
    with pytest.raises(ValueError, match='r, c and f'):
        synthesize(tmp_path / 'x', seed=0, rare_share=0)
    assert not (tmp_path / 'x').exists()


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / 'data' / 'lvis_v1').mkdir(parents=True)
    (tmp_path / 'data' / 'lvis_v1' / 'mine.txt').write_text('keep me')
    with pytest.raises(ValueError, match='refusing'):
        synthesize(tmp_path / 'data', seed=0, **smoke_settings())
    assert (tmp_path / 'data' / 'lvis_v1' / 'mine.txt').read_text() == 'keep me'


def test_fills_the_empty_folders_a_workflow_manager_made_for_its_outputs(tmp_path):
    (tmp_path / 'data' / 'lvis_v1' / 'annotations').mkdir(parents=True)
    synthesize(tmp_path / 'data', seed=0, **smoke_settings())
    assert (tmp_path / 'data' / 'lvis_v1' / 'annotations' / 'lvis_v1_train.json').is_file()


@pytest.mark.parametrize('version', ['v1', 'v0.5'])
def test_loads_through_mmdet_lvis_dataset(smoke, version):
    from mmdet.datasets import LVISV05Dataset, LVISV1Dataset
    root, _ = smoke
    cls = LVISV1Dataset if version == 'v1' else LVISV05Dataset
    for split in ('train', 'val'):
        ann = _ann(root, version, split)
        ds = cls(data_root=str(root / f'lvis_{version}'),
                 ann_file=f'annotations/lvis_{version}_{split}.json',
                 data_prefix=dict(img='' if version == 'v1' else f'{split}2017/'),
                 metainfo=dict(classes=class_names(16)), pipeline=[], test_mode=split == 'val')
        assert len(ds) == len(ann['images'])
        by_image = {}
        for a in ann['annotations']:
            by_image.setdefault(a['image_id'], []).append(a)
        for k in range(len(ds)):
            info = ds.get_data_info(k)
            img = Image.open(info['img_path'])
            assert img.size == (info['width'], info['height'])
            expected = by_image[info['img_id']]
            assert [i['bbox_label'] for i in info['instances']] == \
                [a['category_id'] - 1 for a in expected]
            x, y, w, h = expected[0]['bbox']
            assert info['instances'][0]['bbox'] == [x, y, x + w, y + h]


def _lvis_eval(gt_path, dets, iou_type):
    from faster_coco_eval import COCO, COCOeval_faster
    gt = COCO(str(gt_path))
    ev = COCOeval_faster(gt, gt.loadRes(dets), iou_type, lvis_style=True,
                         print_function=lambda *a: None)
    ev.params.maxDets = [300]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats_as_dict


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_lvis_eval_scores_ground_truth_one_and_shifted_boxes_lower(smoke, iou_type):
    root, _ = smoke
    gt_path = root / 'lvis_v1' / 'annotations' / 'lvis_v1_val.json'
    anns = json.loads(gt_path.read_text())['annotations']
    dets = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                 segmentation=a['segmentation'], score=1.0) for a in anns]
    perfect = _lvis_eval(gt_path, copy.deepcopy(dets), iou_type)
    for key in ('AP_all', 'AP_50', 'APr', 'APc', 'APf'):
        assert perfect[key] == pytest.approx(1.0), key
    shifted = copy.deepcopy(dets)
    for k, d in enumerate(shifted):
        dx = d['bbox'][2] * (0.3 if k % 2 else 0.0)
        d['bbox'][0] += dx
        d['segmentation'] = [[v + dx if i % 2 == 0 else v
                              for i, v in enumerate(d['segmentation'][0])]]
    worse = _lvis_eval(gt_path, shifted, iou_type)
    for key in ('AP_all', 'APr', 'APc', 'APf'):
        assert 0 <= worse[key] < perfect[key] and not math.isnan(worse[key]), key
