"""Every LOCE config loads and its model builds through the registry, as written and as each
CPU scale shrinks it (every config at the smoke scale, Table 1's at the proxy); the configs carry
the paper's settings and the keys the pipeline overrides. (The Table 5 baselines' configs are
tested in test_baseline_configs.py.)"""
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS

import loce.models  # noqa: F401  (registers LOCERoIHead, EquilibriumLoss)
from pipeline import matrix as mx
from pipeline import runconfig

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
FULL = sorted(p for p in CONFIGS.glob('*.py')) + sorted(CONFIGS.glob('ablations/*.py'))
PRETRAIN = {'mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1',
            'mask-rcnn_r101_fpn_normed-mask_random-ms-2x_lvis-v1',
            'mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5',
            'mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1',
            'mask-rcnn_r50_fpn_normed-mask_random-ms-30e_lvis-v1'}
FINETUNE = {'loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1',
            'loce_mask-rcnn_r101_fpn_normed-mask_ms-6e_lvis-v1',
            'loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v0.5',
            'ce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1',
            'loce-ebl_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1',
            'loce-mfs_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1',
            'loce-prior_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1'}
MATRIX = mx.load()


def _shrunk(scale):
    """{config stem: a run of it} at a scale, for the LOCE configs above."""
    found = {}
    for run in mx.runs_at(MATRIX, scale):
        stem = Path(mx.run_spec(MATRIX, run)['config']).name
        if stem in PRETRAIN | FINETUNE:
            found.setdefault(stem, run)
    return found


SMOKE, PROXY = _shrunk('smoke'), _shrunk('proxy')
TABLE1 = PRETRAIN - {'mask-rcnn_r101_fpn_normed-mask_random-ms-2x_lvis-v1',
                     'mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5'} | \
    FINETUNE - {'loce_mask-rcnn_r101_fpn_normed-mask_ms-6e_lvis-v1',
                'loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v0.5'}


def _name(path):
    return path.name[:-len('.py')]


def test_the_contract_stems_exist_and_run_at_the_smoke_and_proxy_scales():
    assert {_name(p) for p in FULL} == PRETRAIN | FINETUNE
    assert set(SMOKE) == PRETRAIN | FINETUNE
    assert set(PROXY) == TABLE1


CASES = ([('full', p.relative_to(CONFIGS)) for p in FULL]
         + [('smoke', run) for run in SMOKE.values()] + [('proxy', run) for run in PROXY.values()])


@pytest.mark.parametrize('scale, case', CASES, ids=lambda c: str(c))
def test_config_loads_and_its_model_builds(scale, case):
    cfg = (Config.fromfile(str(CONFIGS / case)) if scale == 'full'
           else runconfig.at_scale(MATRIX, scale, case))
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['loce'], allow_failed_imports=False)
    for key in ('val_evaluator', 'test_evaluator'):
        assert cfg[key].type == 'FastLVISMetric' and cfg[key].metric == ['bbox', 'segm']
        assert cfg[key].ann_file.endswith('_val.json')
    assert cfg.model.roi_head.mask_head.predictor_cfg == dict(type='NormedConv2d',
                                                              tempearture=20)
    assert cfg.model.test_cfg.rcnn.score_thr == 0.0001
    assert cfg.train_dataloader.batch_size == 2
    assert 'seed' in cfg.randomness
    cfg.model.backbone.init_cfg = None  # build without fetching ImageNet weights
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    classes = cfg.model.roi_head.bbox_head.num_classes
    assert model.roi_head.bbox_head.fc_cls.out_features == classes + 1
    assert classes == (16 if scale == 'smoke' else 25 if scale == 'proxy'
                       else 1230 if 'v0.5' in str(case) else 1203)


def _full(stem):
    sub = 'ablations/' if stem.split('_')[0] in ('ce', 'loce-ebl', 'loce-mfs', 'loce-prior') \
        else ''
    return Config.fromfile(str(CONFIGS / f'{sub}{stem}.py'))


@pytest.mark.parametrize('stem', sorted(PRETRAIN))
def test_pretrain_configs_follow_the_paper(stem):
    cfg = _full(stem)
    assert cfg.model.roi_head.type == 'StandardRoIHead'
    assert cfg.model.roi_head.bbox_head.loss_cls.type == 'CrossEntropyLoss'
    assert cfg.model.test_cfg.rcnn.max_per_img == 300
    epochs, milestones = (30, [20, 28]) if '30e' in stem else (24, [16, 22])
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.02, momentum=0.9,
                                               weight_decay=0.0001)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ('LinearLR', 500, 0.001)
    assert steps.milestones == milestones
    dataset = cfg.train_dataloader.dataset
    if 'sample1e-3' in stem:
        assert (dataset.type, dataset.oversample_thr) == ('ClassBalancedDataset', 1e-3)
        dataset = dataset.dataset
    assert dataset.type == ('LVISV05Dataset' if 'v0.5' in stem else 'LVISV1Dataset')
    resize = next(t for t in dataset.pipeline if t.type == 'RandomChoiceResize')
    assert sorted(tuple(s) for s in resize.scales) == [
        (1333, s) for s in (640, 672, 704, 736, 768, 800)]
    assert any(t.type == 'RandomFlip' and t.prob == 0.5 for t in dataset.pipeline)
    assert cfg.model.backbone.depth == (101 if 'r101' in stem else 50)


@pytest.mark.parametrize('stem', sorted(FINETUNE))
def test_fine_tune_configs_select_their_variant_by_config_alone(stem):
    cfg = _full(stem)
    head = cfg.model.roi_head
    assert head.type == 'LOCERoIHead'
    assert cfg.train_cfg.max_epochs == 6 and cfg.param_scheduler[1].milestones == [3, 5]
    assert cfg.param_scheduler[0].end == 500
    assert [h.type for h in cfg.custom_hooks] == ['FreezeRepresentationHook',
                                                  'MemoryWarmupHook']
    assert cfg.train_dataloader.dataset.type != 'ClassBalancedDataset'
    assert 'find_unused_parameters' not in cfg  # freezing happens before DDP wraps the model
    variant = stem.split('_')[0]
    ebl = head.bbox_head.loss_cls.type == 'EquilibriumLoss'
    mfs = head.mfs is not None
    assert (ebl, mfs) == {'ce': (False, False), 'loce-ebl': (True, False),
                          'loce-mfs': (False, True)}.get(variant, (True, True))
    assert head.indicator.type == ('ClassPrior' if variant == 'loce-prior' else 'MeanScore')
    if variant != 'loce-prior':  # the keys the pipeline overrides
        assert (head.indicator.alpha, head.indicator.bg_score) == (0.9, 0.01)
    if mfs:
        assert (head.mfs.memory_size, head.mfs.sampled_classes,
                head.mfs.features_per_class) == (80, 8, 4)
