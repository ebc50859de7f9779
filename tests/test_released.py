"""The authors' released checkpoints (MMDetection 2.8) convert into this repo's models.

The synthetic checkpoints below are written in the authors' layout as read at their source, not
from the converter's tables: fcjian/LOCE (0a0194d) configs/loce/*.py for the model, and its
MMDetection 2.8 modules for the tensor names and shapes (see authors_keys); mmcv 1.x
save_checkpoint for the file ({'meta', 'state_dict', 'optimizer'}, meta with CLASSES and the
config text).
"""
import argparse
import copy
import random
import re

import pytest
import torch
import torch.nn.functional as F

from pipeline import matrix as mx
from pipeline import released, runconfig

LOCE_V1 = 'loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1'
STAGE1_V1 = 'mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1'
LOCE_V05 = 'loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v0.5'
# mmdet 2.8's mmdet/datasets/lvis.py spells class 654 of v1 (668 of v0.5) this way; 3.x fixed it.
TYPO = {'LVISV1Dataset': 654, 'LVISV05Dataset': 668}


def authors_keys(depth: int, num_classes: int) -> list[tuple[str, tuple]]:
    """(name, shape) of every tensor of the authors' MaskRCNN state dict, as their source builds
    it (mmdet 2.8 in fcjian/LOCE):
    - backbones/resnet.py + utils/res_layer.py: stem conv1 (7x7) + bn1; layer1-4 of Bottlenecks
      (3,4,6,3 for R50; 3,4,23,3 for R101), each conv1 (1x1), conv2 (3x3), conv3 (1x1, x4
      channels) with bn1-3; block 0 adds downsample.0 (1x1 conv, no bias) and downsample.1 (BN).
      A BN holds weight, bias, running_mean, running_var, num_batches_tracked.
    - necks/fpn.py: lateral_convs.i.conv and fpn_convs.i.conv (ConvModule without norm: with
      bias), i < 4; the fifth level is a max-pool.
    - dense_heads/rpn_head.py: rpn_conv (3x3), rpn_cls (3 anchors, sigmoid), rpn_reg (3 x 4).
    - bbox_heads/convfc_bbox_head.py (and loce_convfc_bbox_head.py, same layers):
      shared_fcs.0 (256*7*7 -> 1024), shared_fcs.1, fc_cls (C + 1), fc_reg (4C).
    - mask_heads/fcn_norm_mask_head.py: convs.0-3.conv (3x3), upsample (ConvTranspose2d 2x2),
      conv_logits (1x1 -> C).
    LoceRoIHead's mean score, MFS and EquilibriumLoss are plain attributes: no tensor saved.
    """
    keys = []

    def conv(name, out, inp, k, bias=False):
        keys.append((f'{name}.weight', (out, inp, k, k)))
        if bias:
            keys.append((f'{name}.bias', (out,)))

    def bn(name, c):
        keys.extend((f'{name}.{p}', (c,)) for p in ('weight', 'bias', 'running_mean',
                                                       'running_var'))
        keys.append((f'{name}.num_batches_tracked', ()))

    conv('backbone.conv1', 64, 3, 7)
    bn('backbone.bn1', 64)
    inplanes = 64
    for i, blocks in enumerate({50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]):
        planes = 64 * 2 ** i
        for b in range(blocks):
            p = f'backbone.layer{i + 1}.{b}'
            conv(f'{p}.conv1', planes, inplanes, 1)
            bn(f'{p}.bn1', planes)
            conv(f'{p}.conv2', planes, planes, 3)
            bn(f'{p}.bn2', planes)
            conv(f'{p}.conv3', planes * 4, planes, 1)
            bn(f'{p}.bn3', planes * 4)
            if b == 0:
                conv(f'{p}.downsample.0', planes * 4, inplanes, 1)
                bn(f'{p}.downsample.1', planes * 4)
            inplanes = planes * 4
    for i, c in enumerate((256, 512, 1024, 2048)):
        conv(f'neck.lateral_convs.{i}.conv', 256, c, 1, bias=True)
        conv(f'neck.fpn_convs.{i}.conv', 256, 256, 3, bias=True)
    conv('rpn_head.rpn_conv', 256, 256, 3, bias=True)
    conv('rpn_head.rpn_cls', 3, 256, 1, bias=True)
    conv('rpn_head.rpn_reg', 12, 256, 1, bias=True)
    head, c = 'roi_head.bbox_head', num_classes
    keys += [(f'{head}.shared_fcs.0.weight', (1024, 256 * 7 * 7)), (f'{head}.shared_fcs.0.bias',
                                                                    (1024,)),
             (f'{head}.shared_fcs.1.weight', (1024, 1024)), (f'{head}.shared_fcs.1.bias', (1024,)),
             (f'{head}.fc_cls.weight', (c + 1, 1024)), (f'{head}.fc_cls.bias', (c + 1,)),
             (f'{head}.fc_reg.weight', (4 * c, 1024)), (f'{head}.fc_reg.bias', (4 * c,))]
    for i in range(4):
        conv(f'roi_head.mask_head.convs.{i}.conv', 256, 256, 3, bias=True)
    keys += [('roi_head.mask_head.upsample.weight', (256, 256, 2, 2)),
             ('roi_head.mask_head.upsample.bias', (256,))]
    conv('roi_head.mask_head.conv_logits', c, 256, 1, bias=True)
    return keys


def authors_state(depth, num_classes, seed=0, cheap=False):
    """Weights in the authors' layout: random with a scale that keeps activations finite, or
    (cheap) one stored zero per tensor, for files that only need the right names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in authors_keys(depth, num_classes):
        if cheap or name.endswith(('running_mean', 'bias')):
            value = torch.zeros(()).expand(shape) if cheap else 0.01 * torch.randn(shape,
                                                                                   generator=g)
        elif name.endswith('num_batches_tracked'):
            value = torch.tensor(1000)
        elif name.endswith('running_var'):
            value = torch.ones(shape)
        elif len(shape) == 1:  # a BN's weight
            value = 0.5 + 0.1 * torch.rand(shape, generator=g)
        else:
            fan_in = shape[0] if 'upsample' in name else int(torch.tensor(shape[1:]).prod())
            value = torch.randn(shape, generator=g) / fan_in ** 0.5
        state[name] = value.long() if name.endswith('num_batches_tracked') else value
    return state


def authors_classes(dataset: str) -> tuple:
    from mmdet.registry import DATASETS
    names = list(DATASETS.get(dataset).METAINFO['classes'])
    names[TYPO[dataset]] = 'speaker_(stero_equipment)'
    return tuple(names)


def authors_checkpoint(state, classes, trainable=('fc_cls', 'fc_reg', 'rpn', 'mask_head')):
    """mmcv 1.x save_checkpoint's dict: meta (mmdet's train.py + the runner), the state dict and
    SGD's state, which has momentum only for the parameters LOCE fine-tunes (selectp=1)."""
    names = [k for k in state if not k.endswith(('running_mean', 'running_var',
                                                 'num_batches_tracked'))]
    momentum = {i: {'momentum_buffer': torch.zeros(()).expand(state[k].shape)}
                for i, k in enumerate(names) if any(t in k for t in trainable)}
    meta = dict(env_info='sys.platform: linux\nPyTorch: 1.7.0', config="model = dict(type="
                "'MaskRCNN', pretrained='torchvision://resnet50')\n", seed=None,
                exp_name='loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1.py',
                mmdet_version='2.8.0+0a0194d', CLASSES=classes, epoch=6, iter=37404,
                mmcv_version='1.2.4', time='Fri Aug 20 10:00:00 2021')
    optimizer = dict(state=momentum, param_groups=[dict(
        lr=0.0002, momentum=0.9, dampening=0, weight_decay=0.0001, nesterov=False,
        initial_lr=0.02, params=list(range(len(names))))])
    return dict(meta=meta, state_dict=state, optimizer=optimizer)


def build(stem, max_per_img=20):
    """This repo's model of the config, with fewer proposals and detections per image (random
    weights keep every class of every proposal above score_thr: 1000 x 1203 boxes into NMS, and
    the mask head's logits of 300 boxes would take a gigabyte)."""
    import loce  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    path = mx.config_path(mx.load(), 'full', stem)
    cfg = runconfig._parsed(path, path.stat().st_mtime_ns)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    model_cfg.test_cfg.rpn.max_per_img = 50
    model_cfg.test_cfg.rcnn.max_per_img = max_per_img
    return MODELS.build(model_cfg).eval(), cfg.test_dataloader.dataset.type


def names_of(dataset):
    from mmdet.registry import DATASETS
    return list(DATASETS.get(dataset).METAINFO['classes'])


@pytest.mark.parametrize('stem', [STAGE1_V1, LOCE_V1, LOCE_V05])
def test_authors_layout_converts_and_loads_strictly(stem, tmp_path):
    model, dataset = build(stem)
    num_classes = len(names_of(dataset))
    state = authors_state(50, num_classes, cheap=True)
    path = tmp_path / 'epoch.pth'
    torch.save(authors_checkpoint(state, authors_classes(dataset)), path)
    meta = released.load_released(model, path, names_of(dataset), dataset)
    assert meta['dropped'] == ['meta', 'optimizer'] and meta['mmdet_version'].startswith('2.8')
    loaded = model.state_dict()
    assert set(loaded) - set(state) <= set(released.NO_COUNTERPART)
    assert all(loaded[k].eq(0).all() for k in state)  # the file's values, not the init


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """A LOCE R50 v1 model from a random checkpoint in the authors' layout, the same weights
    loaded natively into a second model (a 3.x checkpoint through mmengine), and the input."""
    from mmengine.runner import load_checkpoint

    from loce.testing import detection_batch

    tmp = tmp_path_factory.mktemp('released')
    model, dataset = build(LOCE_V1)
    state = authors_state(50, 1203, seed=1)
    path = tmp / 'loce_r50_v1.pth'
    torch.save(authors_checkpoint(state, authors_classes(dataset)), path)
    released.load_released(model, path, names_of(dataset), dataset)
    native, _ = build(LOCE_V1)
    native_file = tmp / 'native.pth'
    # Both sources name every tensor alike; the mean score is the native model's own.
    torch.save(dict(meta={}, state_dict=dict(
        state, **{'roi_head.indicator.scores': native.state_dict()['roi_head.indicator.scores']})),
        native_file)
    load_checkpoint(native, str(native_file), map_location='cpu', strict=True)
    batch = detection_batch(num_images=1, size=128, num_classes=1203, seed=3)
    return model, native, batch, state


def predict(model, batch):
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        return model.predict(data['inputs'], data['data_samples'])[0].pred_instances


def test_converted_predictions_equal_the_natively_loaded_weights(converted):
    model, native, batch, _ = converted
    got, want = predict(model, batch), predict(native, batch)
    assert len(got) > 0
    for key in ('bboxes', 'scores', 'labels', 'masks'):
        assert torch.equal(got[key], want[key]), key


def test_normed_mask_predictor_is_the_authors_formula(converted):
    """FCNNormMaskHead.forward: F.conv2d(20 * F.normalize(x), F.normalize(w), b); here it is
    mmdet's NormedConv2d on the same tensors (eps 1e-6 added, not 1e-12 clamped)."""
    model, _, _, state = converted
    x = F.relu(torch.randn(4, 256, 28, 28, generator=torch.Generator().manual_seed(5)))
    w, b = (state[f'roi_head.mask_head.conv_logits.{p}'] for p in ('weight', 'bias'))
    with torch.no_grad():
        ours = model.roi_head.mask_head.conv_logits(x)
    torch.testing.assert_close(ours, F.conv2d(20 * F.normalize(x), F.normalize(w), b),
                               rtol=1e-4, atol=1e-4)


@pytest.fixture(scope='module')
def small_file(tmp_path_factory):
    """A real torch file (zip) of the authors' layout, small: one stored zero per tensor."""
    path = tmp_path_factory.mktemp('small') / 'ckpt.pth'
    state = authors_state(50, 1203, cheap=True)
    torch.save(authors_checkpoint(state, authors_classes('LVISV1Dataset')), path)
    return path


def refused(path, *words):
    with pytest.raises(SystemExit) as err:
        released.read_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f'{path}: refused: ') and all(w in message for w in words), message


def test_truncated_file_is_refused(small_file, tmp_path):
    path = tmp_path / 'truncated.pth'
    path.write_bytes(small_file.read_bytes()[: small_file.stat().st_size // 2])
    refused(path, 'truncated')


def test_corrupted_files_are_refused(small_file, tmp_path):
    data = bytearray(small_file.read_bytes())
    offset = data.index(b'data.pkl') + 200  # inside the pickle's stored bytes
    data[offset] ^= 0xFF
    path = tmp_path / 'flipped.pth'
    path.write_bytes(bytes(data))
    refused(path, 'corrupted')
    noise = tmp_path / 'noise.pth'
    noise.write_bytes(random.Random(0).randbytes(4096))
    refused(noise, 'not a PyTorch checkpoint')
    page = tmp_path / 'page.pth'
    page.write_text('<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning')
    refused(page, 'HTML page')


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'object.pth'
    torch.save(dict(state_dict={}, meta=dict(args=argparse.Namespace(config='x.py'))), path)
    refused(path, 'pickled Python object', 'argparse.Namespace')


def test_wrong_class_count_is_refused(tmp_path):
    model, dataset = build(STAGE1_V1)
    coco = authors_checkpoint(authors_state(50, 80, cheap=True), tuple(f'c{i}' for i in range(80)))
    path = tmp_path / 'coco.pth'
    torch.save(coco, path)
    with pytest.raises(SystemExit, match=r'coco\.pth: refused: wrong class count: its '
                                         r'classifier has 80 classes, LVISV1Dataset has 1203'):
        released.load_released(model, path, names_of(dataset), dataset)
    del coco['state_dict']['roi_head.bbox_head.fc_cls.weight']  # count from meta alone
    torch.save(coco, path)
    with pytest.raises(SystemExit, match='wrong class count: meta.CLASSES has 80'):
        released.load_released(model, path, names_of(dataset), dataset)


def test_other_class_order_and_key_mismatch_are_refused(tmp_path):
    model, dataset = build(STAGE1_V1)
    names = names_of(dataset)
    state = authors_state(50, 1203, cheap=True)
    swapped = list(authors_classes(dataset))
    swapped[0], swapped[1] = swapped[1], swapped[0]
    path = tmp_path / 'ckpt.pth'
    torch.save(authors_checkpoint(state, tuple(swapped)), path)
    with pytest.raises(SystemExit, match=re.escape(f'refused: class 0 is {swapped[0]!r} in '
                                                   f'meta.CLASSES, {names[0]!r} in {dataset}')):
        released.load_released(model, path, names, dataset)
    state['roi_head.bbox_head.extra.weight'] = torch.zeros(1)
    del state['neck.fpn_convs.0.conv.bias']
    torch.save(authors_checkpoint(state, authors_classes(dataset)), path)
    with pytest.raises(SystemExit, match=r'missing 1: neck\.fpn_convs\.0\.conv\.bias; '
                                         r'unexpected 1: roi_head\.bbox_head\.extra\.weight'):
        released.load_released(model, path, names, dataset)


def test_released_entries_name_existing_configs_and_paper_cells():
    matrix = mx.load()
    assert len(matrix['released']) == 6
    for name, spec in matrix['released'].items():
        assert mx.config_path(matrix, 'full', spec['config']).is_file(), name
        assert spec['url'].startswith('https://drive.google.com/file/d/'), name
        assert spec['file'].startswith('data/released/'), name
    assert released.present(matrix, 'smoke') == []


def test_tables_show_released_weights_beside_paper_with_delta(tmp_path):
    """A released model's record fills a 'released weights' line (and its Δ to the paper) in the
    cells its entry names: Table 1's LOCE row and Table 5's R50 v1 LOCE row."""
    import csv

    from loce.evaluation import AP_KEYS
    from pipeline import records
    from pipeline.aggregate import aggregate

    raw = {f'lvis/{task}_{key}': 0.25 for task in records.TASKS for key in AP_KEYS}
    raw['lvis/bbox_AP'] = 0.274
    record = records.metrics(run='loce_r50_v1', seed=None, scale='full', dataset='lvis_v1',
                             raw=raw, keys=AP_KEYS, provenance=dict(checkpoint_sha256='0' * 64))
    records.write(released.metrics_path('smoke', 'loce_r50_v1', tmp_path), record)
    aggregate('smoke', results_dir=tmp_path, check_configs=False)
    table1 = (tmp_path / 'tables' / 'table1.md').read_text()
    assert '| released weights `loce_r50_v1` | 27.40 | 25.00 | 25.00 | 25.00 | 25.00 |' in table1
    assert '| Δ released | +0.00 | -1.60 | +6.50 | -1.20 | -5.70 |' in table1
    rows = list(csv.DictReader((tmp_path / 'tables' / 'table5.csv').open()))
    loce = {r['metric']: r for r in rows if r['row'] == 'r50_v1'}
    assert loce['AP']['released_name'] == 'loce_r50_v1' and loce['AP']['released'] == '25.0'
    assert float(loce['AP']['released_delta']) == pytest.approx(25.0 - 26.6)
    assert all(r['released'] == '' for r in rows if r['row'] == 'r101_v1')
    assert 'released weights' in (tmp_path / 'tables' / 'table5.tex').read_text()
