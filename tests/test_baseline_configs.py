"""The Table 5 baseline configs (configs/baselines/): each loads and builds through the registry,
as written and as the smoke scale shrinks it, carries its method's recipe (its run's `recipe` in
pipeline/experiments.yaml) and its reference's hyper-parameters, keeps them at the smoke scale,
scores with the right activation through the stock bbox head, and the decoupled ones train only
the classifier on top of a stage-1 checkpoint. Every config's classifier
bias starts where its reference starts it (-log 999 for a sigmoid classifier)."""
import copy
import functools
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_state_dict

import loce  # noqa: F401  (registers the losses and hooks)
from loce.engine.freeze_hook import freeze_except
from pipeline import matrix as mx
from pipeline import runconfig

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
CLASSIFIER = ('roi_head.bbox_head.fc_cls', )
MATRIX = mx.load()
# Every config as written (full, ablations, baselines) and as the smoke scale runs it: a case is
# ('full', path under configs/) or ('smoke', a run of the config).
SMOKE_RUNS = {}
for _run in mx.runs_at(MATRIX, 'smoke'):
    SMOKE_RUNS.setdefault(mx.run_spec(MATRIX, _run)['config'], _run)
EVERY_CONFIG = ([('full', str(p.relative_to(CONFIGS)))
                 for p in sorted(CONFIGS.glob('*.py')) + sorted(CONFIGS.glob('*/*.py'))
                 if p.parent.name not in ('smoke', 'proxy', '_base_')]
                + [('smoke', run) for run in SMOKE_RUNS.values()])
DEFAULTS = dict(sampler='random', mask='NormedConv2d', classifier='Linear', statistics=False)


def _recipes():
    """Per baseline config (stem), the `recipe` its run declares in pipeline/experiments.yaml,
    with the schema's defaults, its block (from its Table 5 cell), whether it is fine-tuned
    from a stage-1 model (and which config that model has), and its schedule as
    (kind, length, lr steps)."""
    out = {}
    for name, spec in mx.runs(MATRIX).items():
        recipe = spec['recipe']
        if recipe is None:
            continue
        parent = spec['pretrain'] and mx.runs(MATRIX)[spec['pretrain']]['config']
        kind = 'epochs' if 'epochs' in recipe else 'iters'
        out[spec['config'].removeprefix('baselines/')] = dict(
            DEFAULTS, **recipe, run=name, block=spec['tables'][0].split('/')[1],
            decoupled=parent is not None, stage1=parent, stage1_run=spec['pretrain'],
            schedule=(kind, recipe[kind], recipe['steps']))
    return out


RECIPES = _recipes()
STEMS = sorted(RECIPES)


@functools.lru_cache(maxsize=None)
def _load(case):
    scale, name = case
    return (Config.fromfile(str(CONFIGS / name)) if scale == 'full'
            else runconfig.at_scale(MATRIX, scale, name))


def _config(case):
    """A private copy (the tests edit theirs) of a config parsed once per session."""
    return copy.deepcopy(_load(case))


def _full(stem):
    return _config(('full', f'baselines/{stem}.py'))


def _smoke(run):
    return _config(('smoke', run))


def _twin(stem):
    """The baseline's config as the smoke scale runs it."""
    return _smoke(RECIPES[stem]['run'])


def _name(case):
    return ':'.join(case)


def _using(loss_type):
    """Every config (full, ablation; at the smoke scale) whose bbox head trains with
    `loss_type`."""
    return [c for c in EVERY_CONFIG
            if _load(c).model.roi_head.bbox_head.loss_cls.type == loss_type]


def _build(cfg):
    cfg.model.backbone.init_cfg = None  # build without fetching ImageNet weights
    init_default_scope('mmdet')
    return MODELS.build(cfg.model)


def test_every_baseline_is_in_the_table_and_runs_at_the_smoke_scale():
    assert sorted(p.stem for p in (CONFIGS / 'baselines').glob('*.py')) == STEMS
    for stem in STEMS:
        assert RECIPES[stem]['run'] in mx.runs_at(MATRIX, 'smoke'), stem


@pytest.mark.parametrize('smoke', [False, True], ids=['full', 'smoke'])
@pytest.mark.parametrize('stem', STEMS)
def test_config_loads_and_its_model_builds(stem, smoke):
    cfg = _twin(stem) if smoke else _full(stem)
    assert cfg.custom_imports == dict(imports=['loce'], allow_failed_imports=False)
    for key in ('val_evaluator', 'test_evaluator'):
        assert cfg[key].type == 'FastLVISMetric' and cfg[key].metric == ['bbox', 'segm']
    assert cfg.model.test_cfg.rcnn.score_thr == 0.0001
    assert cfg.train_dataloader.batch_size == 2 and 'seed' in cfg.randomness
    model = _build(cfg)
    head = model.roi_head.bbox_head
    classes = 16 if smoke else 1230 if 'v0.5' in stem else 1203
    assert head.num_classes == classes == model.roi_head.mask_head.num_classes
    assert getattr(head.loss_cls, 'num_classes', classes) == classes
    assert type(head.loss_cls).__name__ == RECIPES[stem]['loss']
    assert model.backbone.depth == ((101 if 'r101' in stem else 50) if not smoke
                                    else (34 if 'r101' in stem else 18))


def _hook_types(cfg):
    return [h.type for h in cfg.get('custom_hooks', [])]


def _predictors(cfg):
    """(mask predictor, classifier) types; unset means mmdet's defaults, Conv and Linear."""
    head = cfg.model.roi_head
    return (head.mask_head.get('predictor_cfg', dict(type='Conv'))['type'],
            head.bbox_head.get('cls_predictor_cfg', dict(type='Linear'))['type'])


@pytest.mark.parametrize('stem', STEMS)
def test_full_config_follows_its_recipe(stem):
    recipe, cfg = RECIPES[stem], _full(stem)
    kind, length, milestones = recipe['schedule']
    steps = cfg.param_scheduler[1]
    if kind == 'epochs':
        assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == length
        assert steps.by_epoch and steps.end == length
    else:
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == length
        assert not steps.by_epoch and steps.end == length
        assert not cfg.default_hooks.checkpoint.by_epoch and not cfg.log_processor.by_epoch
    assert steps.milestones == milestones
    assert cfg.train_cfg.val_interval == length  # evaluated once, at the end
    dataset = cfg.train_dataloader.dataset
    assert (dataset.type == 'ClassBalancedDataset') == (recipe['sampler'] == 'rfs')
    if recipe['sampler'] == 'rfs':
        assert dataset.oversample_thr == 1e-3
    assert _predictors(cfg) == (recipe['mask'], recipe['classifier'])
    assert cfg.model.roi_head.type == 'StandardRoIHead'
    hooks = _hook_types(cfg)
    assert ('ClassStatisticsHook' in hooks) == recipe['statistics']
    if recipe['decoupled']:
        assert hooks[0] == 'FreezeRepresentationHook'
        assert tuple(cfg.custom_hooks[0].trainable) == CLASSIFIER
        assert cfg.model.backbone.init_cfg is None  # every other weight comes from stage 1
    else:
        assert 'FreezeRepresentationHook' not in hooks
    assert 'load_from' not in cfg or cfg.load_from is None  # the pipeline hands it in
    assert 'find_unused_parameters' not in cfg


def test_recipe_details_from_the_reference_code():
    ecm = _full('ecm_mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1')
    assert ecm.model.roi_head.bbox_head.loss_cls.fg_bg_ratio == 6.3313
    assert ecm.optim_wrapper.clip_grad.max_norm == 5
    assert (ecm.param_scheduler[0].start_factor, ecm.param_scheduler[0].end) == (1e-4, 10000)
    bags = _full('bags_mask-rcnn_r50_fpn_normed-mask_ms-12e_lvis-v0.5')
    assert bags.model.roi_head.bbox_head.loss_cls.beta == 8
    assert tuple(bags.model.roi_head.bbox_head.loss_cls.bin_split) == (10, 100, 1000)
    assert bags.optim_wrapper.optimizer.lr == 0.01 and bags.optim_wrapper.clip_grad.max_norm == 35
    assert bags.param_scheduler[0].start_factor == pytest.approx(1 / 3)
    balms = _full('balms_mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-22k_lvis-v0.5')
    assert balms.optim_wrapper.optimizer.lr == 0.02
    assert (balms.param_scheduler[0].end, balms.param_scheduler[0].start_factor) == (1000, 1e-3)


def test_the_configs_found_by_their_loss_are_the_recipe_rows_at_both_scales():
    for loss in ('EqualizationLoss', 'EqualizationLossV2', 'SeesawLoss'):
        stems = [s for s in STEMS if RECIPES[s]['loss'] == loss]
        assert sorted(_using(loss)) == sorted(
            [('full', f'baselines/{s}.py') for s in stems]
            + [('smoke', RECIPES[s]['run']) for s in stems])


def _reference_loss(case):
    init_default_scope('mmdet')
    return MODELS.build(_config(case).model.roi_head.bbox_head.loss_cls)


def _v05(case):
    scale, name = case
    return 'lvis-v0.5' in name if scale == 'full' else mx.run_spec(MATRIX, name)['dataset'] \
        == 'lvis_v0.5'


@pytest.mark.parametrize('case', _using('EqualizationLoss'), ids=_name)
def test_every_eql_config_has_the_reference_threshold(case):
    """eqlv2 configs/end2end/eql_r50_8x2_1x.py on v1, eql.detectron2 on v0.5."""
    assert _reference_loss(case).lambda_ == (1.77e-3 if _v05(case) else 1.1e-3)


@pytest.mark.parametrize('case', _using('EqualizationLossV2'), ids=_name)
def test_every_eqlv2_config_has_the_reference_hyper_parameters(case):
    loss = _reference_loss(case)
    assert (loss.mu, loss.alpha, loss.gamma) == (0.8, 4.0, 12)


@pytest.mark.parametrize('case', _using('SeesawLoss'), ids=_name)
def test_every_seesaw_config_has_the_reference_p_q_and_temperature(case):
    loss = _reference_loss(case)
    assert (loss.p, loss.q) == (0.8, 2.0)
    assert _config(case).model.roi_head.bbox_head.cls_predictor_cfg.tempearture == 20


def _bbox_head(case):
    init_default_scope('mmdet')
    head = MODELS.build(_config(case).model.roi_head.bbox_head)
    if hasattr(head.loss_cls, 'set_class_statistics'):
        _statistics(head.loss_cls, head.num_classes)
    return head


def _scores_each_class_alone(head):
    """A sigmoid classifier: class 0's test-time score stays put when the other classes' logits
    move (a softmax's moves with them)."""
    loss = head.loss_cls
    score = (loss.get_activation if getattr(loss, 'custom_activation', False)
             else functools.partial(F.softmax, dim=1))
    logits = torch.zeros(1, head.fc_cls.out_features)
    moved = logits.clone()
    moved[:, 1:head.num_classes] = 3.0
    return torch.equal(score(logits)[:, 0], score(moved)[:, 0])


def test_the_sigmoid_classifiers_are_found():
    found = {RECIPES[s]['loss'] for s in STEMS
             if _scores_each_class_alone(_bbox_head(('smoke', RECIPES[s]['run'])))}
    assert found == {'EqualizationLoss', 'EqualizationLossV2', 'BalancedSoftmaxLoss',
                     'EffectiveClassMarginLoss'}


@pytest.mark.parametrize('case', EVERY_CONFIG, ids=_name)
def test_the_classifier_bias_starts_where_its_reference_starts_it(case):
    """A sigmoid classifier at the prior probability 0.001 (as the EQL, EQL v2 and BALMS
    reference code), else at 0: mmdet's default, kept by the softmax references and by ECM's
    (janghyuncho/ECM-Loss r50_ecm_2x.py sets no bias prior for its cosine classifier)."""
    head = _bbox_head(case)
    head.init_weights()
    sigmoid = _scores_each_class_alone(head)
    ecm = type(head.loss_cls).__name__ == 'EffectiveClassMarginLoss'
    expected = -math.log((1 - 0.001) / 0.001) if sigmoid and not ecm else 0.0
    bias = head.fc_cls.bias.detach()
    torch.testing.assert_close(bias, torch.full_like(bias, expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize('stem', STEMS)
def test_the_smoke_runs_the_same_row_shrunk(stem):
    full, twin = _full(stem), _twin(stem)
    assert twin.get('custom_hooks') == full.get('custom_hooks')
    assert twin.train_dataloader.dataset.type == full.train_dataloader.dataset.type
    assert _predictors(twin) == _predictors(full)
    assert twin.model.roi_head.bbox_head.loss_cls.type == RECIPES[stem]['loss']
    if twin.train_cfg.type == 'EpochBasedTrainLoop':  # one epoch of the 100-image subset
        assert twin.train_cfg.max_epochs == 1 and twin.train_cfg.val_begin > 1
    else:
        assert twin.train_cfg.val_begin > twin.train_cfg.max_iters
    assert twin.param_scheduler[1].end == 50


def _statistics(loss, num_classes):
    counts = torch.arange(1, num_classes + 1) * 3
    loss.set_class_statistics(image_counts=counts, instance_counts=counts * 2,
                              num_images=int(counts.sum()))


@pytest.mark.parametrize('stem', STEMS)
def test_the_stock_bbox_head_scores_with_the_loss_activation(stem):
    """What FastLVISMetric sees: predict_by_feat's C + 1 scores, background last."""
    model = _build(_twin(stem))
    head = model.roi_head.bbox_head
    if RECIPES[stem]['statistics']:
        _statistics(head.loss_cls, head.num_classes)
    torch.manual_seed(5)
    cls_score, bbox_pred = head(torch.randn(6, head.in_channels, 7, 7))
    rois = torch.cat([torch.zeros(6, 1), torch.rand(6, 2) * 20, torch.rand(6, 2) * 20 + 30], 1)
    scores = head.predict_by_feat((rois,), (cls_score,), (bbox_pred,),
                                  [dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))],
                                  rcnn_test_cfg=None)[0].scores
    assert scores.shape == (6, head.num_classes + 1)
    assert ((scores >= 0) & (scores <= 1)).all()
    if RECIPES[stem]['loss'] == 'CrossEntropyLoss':
        torch.testing.assert_close(scores, F.softmax(cls_score, dim=1))
    else:
        torch.testing.assert_close(scores, head.loss_cls.get_activation(cls_score))


@pytest.mark.parametrize('stem', [s for s in STEMS if RECIPES[s]['decoupled']])
def test_decoupled_rows_train_only_the_classifier_over_a_stage1_model(stem):
    twin = _twin(stem)
    stage1 = _build(_smoke(RECIPES[stem]['stage1_run']))
    model = _build(twin)
    init_fc_cls = model.roi_head.bbox_head.fc_cls.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        load_state_dict(model, stage1.state_dict(), strict=False)
    # the classifier's shape differs from stage 1's softmax one: it keeps its initialisation
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, init_fc_cls)
    assert torch.equal(model.roi_head.bbox_head.shared_fcs[0].weight,
                       stage1.roi_head.bbox_head.shared_fcs[0].weight)
    freeze_except(model, tuple(twin.custom_hooks[0].trainable))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_cls.bias'}


@pytest.mark.slow
@pytest.mark.parametrize('stem', ['bags_mask-rcnn_r50_fpn_normed-mask_ms-12e_lvis-v0.5',
                                  'eql_mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1'])
def test_a_few_smoke_iterations_train_save_the_statistics_and_evaluate(stem, tmp_path,
                                                                      tiny_lvis):
    from mmengine.runner import Runner

    from pipeline.data.subset import subset
    from pipeline.runconfig import relocate_data

    version = 'lvis_v0.5' if 'v0.5' in stem else 'lvis_v1'
    annotations = tiny_lvis / version / 'annotations'
    subset(annotations / f'{version}_train.json',
           annotations / f'{version}_train_finetune.json', num_images=150, seed=0)
    cfg = _twin(stem)
    relocate_data(cfg, tiny_lvis / version)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=3, val_begin=4)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=3)
    cfg.test_dataloader.dataset.indices = 4
    if RECIPES[stem]['decoupled']:
        stage1 = _build(_smoke(RECIPES[stem]['stage1_run']))
        torch.save(dict(state_dict=stage1.state_dict(), meta={}), tmp_path / 'stage1.pth')
        cfg.load_from = str(tmp_path / 'stage1.pth')
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert {'lvis/bbox_AP', 'lvis/segm_AP', 'lvis/bbox_APr'} <= set(metrics)
    saved = torch.load(tmp_path / 'work' / 'iter_3.pth', map_location='cpu',
                       weights_only=True)['state_dict']
    statistic = {'GroupSoftmaxLoss': 'instance_counts',
                 'EqualizationLoss': 'image_frequency'}[RECIPES[stem]['loss']]
    assert saved[f'roi_head.bbox_head.loss_cls.{statistic}'].sum() > 0
