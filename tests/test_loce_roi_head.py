"""LOCERoIHead: per-instance indicator entries from each image's own rows, memory features in the
bbox losses but not the mask head, and a real LOCE fine-tuning iteration through the mmengine
Runner (warm-up, freezing, finite losses) that resumes with its mean score intact."""
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmdet.registry import MODELS

import loce  # noqa: F401  (registers the modules and the checkpoints' safe globals)
from loce.models.indicator import MeanScore
from loce.testing import detection_batch
from pipeline import matrix as mx
from pipeline import runconfig

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 16


def _smoke_loce_config():
    """LOCE's config as the smoke scale runs it (16 classes, ResNet-18 at a quarter width)."""
    return runconfig.at_scale(mx.load(), 'smoke', 'loce_r50_v1')


def _tiny_loce_model():
    cfg = _smoke_loce_config()
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_indicator_entries_come_from_each_images_own_rows():
    head = SimpleNamespace(indicator=MeanScore(num_classes=4, alpha=0.5))
    # image 0: 5 sampled RoIs, 2 positives on GT 0 (class 3); image 1: 3 RoIs, all positive:
    # 1 on GT 0 (class 1), 2 on GT 1 (class 3). Then 4 memory rows: classes 2, 2, 0, 2.
    results = [
        SimpleNamespace(priors=torch.zeros(5, 4), pos_priors=torch.zeros(2, 4), num_gts=1,
                        pos_gt_labels=torch.tensor([3, 3]),
                        pos_assigned_gt_inds=torch.tensor([0, 0])),
        SimpleNamespace(priors=torch.zeros(3, 4), pos_priors=torch.zeros(3, 4), num_gts=2,
                        pos_gt_labels=torch.tensor([3, 1, 3]),
                        pos_assigned_gt_inds=torch.tensor([1, 0, 1])),
    ]
    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    probs = logits.softmax(-1)
    from loce.models.loce_roi_head import LOCERoIHead
    LOCERoIHead._update_indicator(head, logits, results, torch.tensor([2, 2, 0, 2]))

    def blend(old, entries):
        decay = 0.5 ** len(entries)
        return decay * old + (1 - decay) * sum(entries) / len(entries)

    inst_a = (probs[0, 3] + probs[1, 3]) / 2  # image 0, GT 0
    inst_b = (probs[5, 3] + probs[7, 3]) / 2  # image 1, GT 1 (rows 5 and 7, not 512-based)
    expected = [blend(0.01, [probs[10, 0]]), blend(0.01, [probs[6, 1]]),
                blend(0.01, [(probs[8, 2] + probs[9, 2] + probs[11, 2]) / 3]),
                blend(0.01, [inst_a, inst_b]), 0.01]
    torch.testing.assert_close(head.indicator.scores, torch.tensor(expected))


def test_memory_features_reach_the_bbox_losses_but_not_the_mask_head():
    model = _tiny_loce_model()
    head = model.roi_head
    seen = {}
    bbox_forward, bbox_loss, mask_loss = head.bbox_head.forward, head.bbox_head.loss, head.mask_loss

    def spy_bbox(feats):
        seen['bbox_rows'] = len(feats)
        return bbox_forward(feats)

    def spy_bbox_loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                      bbox_weights, **kwargs):
        seen['loss_args'] = (cls_score, bbox_pred, labels, label_weights, bbox_targets,
                             bbox_weights)
        seen['scores'] = head.indicator.scores.clone()
        return bbox_loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                         bbox_weights, **kwargs)

    def spy_mask(x, sampling_results, bbox_feats, batch_gt_instances):
        seen['rois'] = sum(len(r.priors) for r in sampling_results)
        seen['mask_bbox_feats'] = len(bbox_feats)
        seen['mask_rois'] = sum(len(r.pos_priors) for r in sampling_results)
        return mask_loss(x, sampling_results, bbox_feats, batch_gt_instances)

    head.bbox_head.forward, head.bbox_head.loss, head.mask_loss = spy_bbox, spy_bbox_loss, spy_mask
    data = model.data_preprocessor(detection_batch(), True)
    losses = model(**data, mode='loss')  # enqueue first: 16 boxes per GT, at most M=16 per class
    classes = torch.cat([s.gt_instances.labels for s in data['data_samples']]).unique()
    assert len(head.memory) == 16 * len(classes) and seen['bbox_rows'] > seen['rois']
    memory_rows = seen['bbox_rows'] - seen['rois']
    assert memory_rows % 4 == 0 and 0 < memory_rows <= 8 * 4  # k=8 classes x m=4 at most
    assert seen['mask_bbox_feats'] == seen['rois']

    # The losses, recomputed by hand in float64 with every memory row a weight-1 positive of
    # its class: EBL (Eq. 3) over all rows, class-specific L1 over the positives.
    cls_score, bbox_pred, labels, label_weights, bbox_targets, bbox_weights = (
        t.detach().double() if t.is_floating_point() else t for t in seen['loss_args'])
    n = seen['rois']
    mem_labels = labels[n:]
    assert set(mem_labels.tolist()) <= set(classes.tolist())
    w_cls = torch.cat([label_weights[:n], torch.ones(memory_rows, dtype=torch.float64)])
    w_box = torch.cat([bbox_weights[:n], torch.ones(memory_rows, 4, dtype=torch.float64)])
    s = seen['scores'].double()
    adjusted = s[None, :] * cls_score.exp()
    ebl = -(adjusted[torch.arange(len(labels)), labels] / adjusted.sum(1)).log()
    expected_cls = (ebl * w_cls).sum() / (w_cls > 0).sum()
    pos = (labels >= 0) & (labels < NUM_CLASSES)
    pred = bbox_pred.view(len(labels), -1, 4)[pos.nonzero()[:, 0], labels[pos]]
    expected_box = ((pred - bbox_targets[pos]).abs() * w_box[pos]).sum() / len(bbox_targets)
    torch.testing.assert_close(losses['loss_cls'].double(), expected_cls, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses['loss_bbox'].double(), expected_box, rtol=1e-5, atol=1e-6)
    values = [t for v in losses.values() for t in (v if isinstance(v, list) else [v])]
    assert all(torch.isfinite(t).all() for t in values)


def test_classes_with_an_empty_queue_are_never_drawn():
    """A class without training instances (prior 0: weight 1e7) must not take the draws."""
    model = _tiny_loce_model()
    head = model.roi_head
    head.indicator.scores.zero_()      # every class looks maximally weak ...
    data = model.data_preprocessor(detection_batch(), True)
    model(**data, mode='loss')         # ... but only the batch's classes have features
    held = (head.memory.filled > 0).nonzero()[:, 0]
    feats, labels, _ = head._sample_memory()
    assert len(labels) == head.sampled_classes * head.features_per_class
    assert set(labels.tolist()) <= set(held.tolist())


def test_prediction_is_the_stock_softmax_whatever_the_mean_score():
    """No adjustment at test time: LOCE predicts exactly as a StandardRoIHead with its weights."""
    model = _tiny_loce_model()
    cfg = _smoke_loce_config().model
    for key in ('indicator', 'mfs'):
        cfg.roi_head.pop(key)
    cfg.roi_head.type = 'StandardRoIHead'
    cfg.roi_head.bbox_head.loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=False)
    plain = MODELS.build(cfg)
    plain.load_state_dict(model.state_dict(), strict=False)
    model.roi_head.indicator.scores.uniform_(1e-4, 0.9)
    outputs = []
    for detector in (model, plain):
        detector.eval()
        with torch.no_grad():
            data = detector.data_preprocessor(detection_batch(num_images=1, seed=3), False)
            outputs.append(detector(**data, mode='predict')[0].pred_instances)
    assert len(outputs[0]) > 0
    for key in ('bboxes', 'scores', 'labels', 'masks'):
        assert torch.equal(outputs[0][key], outputs[1][key]), key


def test_misconfigurations_fail_naming_the_key():
    cfg = _smoke_loce_config().model.roi_head
    init_default_scope('mmdet')
    wrong_key = cfg.copy()
    wrong_key.mfs = dict(queue_size=80)  # the authors' name
    with pytest.raises(TypeError, match='memory_size'):
        MODELS.build(wrong_key)
    second_knob = cfg.copy()
    second_knob.bbox_head = dict(cfg.bbox_head, loss_cls=dict(
        type='EquilibriumLoss', indicator='prior', class_counts=[1] * NUM_CLASSES))
    with pytest.raises(ValueError, match='roi_head.indicator'):
        MODELS.build(second_knob)


class Probe(Hook):
    """Snapshots around the first training iteration."""

    priority = 'LOWEST'

    def __init__(self):
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        head = runner.model.roi_head
        self.params = {n: p.detach().clone() for n, p in runner.model.named_parameters()}
        self.stats = {n: b.clone() for n, b in runner.model.named_buffers() if 'running' in n}
        memory = head.memory
        self.seen.append(dict(scores=head.indicator.scores.clone(), iter=runner.iter,
                              memory=0 if memory is None else len(memory),
                              filled=None if memory is None else memory.filled.clone(),
                              features=None if memory is None else memory.features.clone()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.outputs = outputs
        self.changed = {n: not torch.equal(self.params[n], p)
                        for n, p in runner.model.named_parameters()}
        self.stats_changed = [n for n, b in runner.model.named_buffers()
                              if 'running' in n and not torch.equal(self.stats[n], b)]


def _runner(tmp_path, data_root, max_epochs, probe, **overrides):
    """The smoke LOCE config on the first two images of the tiny LVIS (one iteration an epoch)."""
    cfg = _smoke_loce_config()
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.dataset.data_root = str(data_root / 'lvis_v1') + '/'
    cfg.train_dataloader.dataset.ann_file = 'annotations/lvis_v1_train.json'
    cfg.train_dataloader.dataset.indices = 2
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.max_epochs = max_epochs
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.logger.interval = 1
    cfg.merge_from_dict(overrides)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(probe)
    return runner


@pytest.fixture(scope='module')
def first_epoch(tmp_path_factory, tiny_lvis):
    """One epoch of LOCE fine-tuning = one iteration (2 images, batch 2), from random weights."""
    tmp_path = tmp_path_factory.mktemp('loce')
    probe = Probe()
    runner = _runner(tmp_path, tiny_lvis, 1, probe)
    runner.train()
    return SimpleNamespace(tmp_path=tmp_path, probe=probe, runner=runner, data=tiny_lvis)


def test_one_loce_fine_tuning_iteration(first_epoch):
    probe, model = first_epoch.probe, first_epoch.runner.model
    assert len(probe.seen) == 1 and probe.seen[0]['memory'] > 0  # warm-up filled the memory
    losses = {k: v for k, v in probe.outputs.items() if k.startswith('loss')}
    assert {'loss_cls', 'loss_bbox', 'loss_mask', 'loss_rpn_cls'} <= set(losses)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in losses.values())
    frozen = ('backbone.', 'neck.', 'roi_head.bbox_head.shared_fcs.')
    trainable = ('rpn_head.', 'roi_head.bbox_head.fc_cls.', 'roi_head.bbox_head.fc_reg.',
                 'roi_head.mask_head.')
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(trainable), name
        if name.startswith(frozen):
            assert not probe.changed[name], f'{name} changed though frozen'
    assert probe.stats_changed == []  # frozen BatchNorm stays in eval mode
    for name in ('rpn_head.rpn_conv.weight', 'roi_head.bbox_head.fc_cls.weight',
                 'roi_head.bbox_head.fc_reg.weight', 'roi_head.mask_head.convs.0.conv.weight',
                 'roi_head.mask_head.conv_logits.weight'):
        assert probe.changed[name], f'{name} did not train'
    # the mean score moved during the iteration, and it is in the checkpoint
    assert not torch.equal(probe.seen[0]['scores'], model.roi_head.indicator.scores)
    state = torch.load(first_epoch.tmp_path / 'work/epoch_1.pth', weights_only=False)
    torch.testing.assert_close(state['state_dict']['roi_head.indicator.scores'],
                               model.roi_head.indicator.scores)


def test_the_checkpoint_loads_weights_only_as_mmdet_tools_load_it(first_epoch):
    """tools/test.py loads load_from through mmengine's _load_checkpoint, i.e. torch.load with
    torch's default weights_only=True; in a fresh process that imported the plug-in (as a config's
    custom_imports does) it gives the same tensors as an unrestricted load."""
    checkpoint = first_epoch.tmp_path / 'work/epoch_1.pth'
    out = first_epoch.tmp_path / 'weights_only_state.pth'
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    subprocess.run([sys.executable, '-c', (
        'import sys, torch, loce; from mmengine.runner.checkpoint import _load_checkpoint; '
        'state = _load_checkpoint(sys.argv[1], map_location="cpu"); '
        'torch.save(state["state_dict"], sys.argv[2])'), str(checkpoint), str(out)],
        env=env, check=True)
    expected = torch.load(checkpoint, weights_only=False)['state_dict']
    loaded = torch.load(out, weights_only=True)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


class _GetattrOf:
    """Pickles as getattr(owner, name): what a hostile checkpoint would use to reach code."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.mark.parametrize('owner, name', [(np.ndarray, 'tofile'), (HistoryBuffer, '__init__')])
def test_weights_only_getattr_reaches_history_buffer_statistics_only(tmp_path, owner, name):
    allowed = tmp_path / 'allowed.pth'
    torch.save({'mean': _GetattrOf(HistoryBuffer, 'mean')}, allowed)
    assert torch.load(allowed, weights_only=True)['mean'] is HistoryBuffer.mean
    hostile = tmp_path / 'hostile.pth'
    torch.save({'x': _GetattrOf(owner, name)}, hostile)
    with pytest.raises(pickle.UnpicklingError, match=f'getattr.*{name}.*not allowed'):
        torch.load(hostile, weights_only=True)


def test_resume_restores_the_checkpointed_memory_and_mean_score(first_epoch):
    checkpoint = first_epoch.tmp_path / 'work/epoch_1.pth'
    state = torch.load(checkpoint, weights_only=False)
    saved_memory = state['loce_feature_memory']
    assert set(saved_memory) == {'features', 'targets', 'labels', 'pointers', 'filled'}
    memory = first_epoch.runner.model.roi_head.memory
    assert torch.equal(saved_memory['features'], memory.features.cpu())
    probe = Probe()
    runner = _runner(first_epoch.tmp_path, first_epoch.data, 2, probe,
                     resume=True, load_from=str(checkpoint))
    runner.train()
    assert probe.seen[0]['iter'] == 1
    assert probe.seen[0]['memory'] == int(saved_memory['filled'].sum())
    assert torch.equal(probe.seen[0]['filled'], saved_memory['filled'])
    assert torch.equal(probe.seen[0]['features'], saved_memory['features'])  # not refilled
    torch.testing.assert_close(probe.seen[0]['scores'],
                               state['state_dict']['roi_head.indicator.scores'])


def test_a_memory_above_the_threshold_is_not_checkpointed_and_refilled_on_resume(
        tmp_path, tiny_lvis):
    hooks = [dict(type='FreezeRepresentationHook'),
             dict(type='MemoryWarmupHook', images_per_class=5, checkpoint_memory_bytes=0)]
    runner = _runner(tmp_path, tiny_lvis, 1, Probe(), custom_hooks=hooks)
    runner.train()
    state = torch.load(tmp_path / 'work/epoch_1.pth', weights_only=False)
    assert 'loce_feature_memory' not in state
    probe = Probe()
    runner = _runner(tmp_path, tiny_lvis, 2, probe, custom_hooks=hooks, resume=True,
                     load_from=str(tmp_path / 'work/epoch_1.pth'))
    runner.train()
    assert probe.seen[0]['iter'] == 1 and probe.seen[0]['memory'] > 0  # refilled by the warm-up
    torch.testing.assert_close(probe.seen[0]['scores'],
                               state['state_dict']['roi_head.indicator.scores'])


def test_ebl_alone_warms_the_mean_score_up_from_the_pretrained_model(tmp_path, tiny_lvis):
    """As the authors' warm-up, which always runs: without it EBL-only would start from a
    uniform 0.01 while LOCE starts from the pretrained model's scores."""
    probe = Probe()
    runner = _runner(tmp_path, tiny_lvis, 1, probe, **{'model.roi_head.mfs': None})
    runner.train()
    assert runner.model.roi_head.memory is None
    before_first_iteration = probe.seen[0]['scores']
    assert (before_first_iteration[:-1] != 0.01).any()
    assert before_first_iteration[-1] == pytest.approx(0.01)  # background stays pinned
