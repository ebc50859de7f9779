"""A scale's shrink (pipeline/shrink.py, configs/<scale>/shrink.py) against schedules worked out
by hand from the full configs: lengths, steps at the full schedule's fractions, warm-ups by kind
of run, RFS's longer epoch, the class count in losses that size buffers by class; and a clear
error where the shrink has no rule for a config."""
import pytest

from pipeline import matrix as mx
from pipeline import runconfig
from pipeline import shrink

MATRIX = mx.load()


def _at(scale, run):
    return runconfig.at_scale(MATRIX, scale, run)


def _schedule(cfg):
    warmup, steps = cfg.param_scheduler
    return warmup.start_factor, warmup.end, steps.end, steps.milestones


# (scale, run): (loop, length, warm-up start, warm-up end, steps), by hand from the full configs:
# 24 epochs with steps at 16, 22; 30 at 20, 28; 6 at 3, 5; 12 at 8, 11; ECM at 20, 22 from 1e-4;
# BALMS 22k iterations with steps at 11k, 18k and a 1k warm-up.
CASES = {
    ('smoke', 'r50_v1'): ('epochs', 1, 0.001, 20, 50, [33, 46]),         # 16/24*50, 22/24*50
    ('smoke', 'r50_v1_rfs'): ('iters', 50, 0.001, 20, 50, [33, 46]),     # RFS: a plain epoch's
    ('smoke', 'r50_v1_30e'): ('iters', 63, 0.001, 20, 63, [42, 59]),      # 20/30*63, 28/30*63
    ('smoke', 'ecm_r50_v1'): ('iters', 50, 1e-4, 20, 50, [42, 46]),       # 20/24*50 = 41.7
    ('smoke', 'loce_r50_v1'): ('epochs', 1, 0.001, 5, 50, [25, 42]),      # 3/6*50, 5/6*50
    ('smoke', 'seesaw_r50_v1'): ('epochs', 1, 0.001, 20, 50, [33, 46]),   # end to end, 12e
    ('smoke', 'bags_r50_v05'): ('epochs', 1, 1 / 3, 5, 50, [33, 46]),     # a fine-tune, 12e
    ('smoke', 'balms_r50_v05'): ('iters', 50, 0.001, 2, 50, [25, 41]),    # 1000/22000*50 = 2.3
    ('proxy', 'r50_v1'): ('iters', 1000, 0.001, 50, 1000, [667, 917]),
    ('proxy', 'r50_v1_30e'): ('iters', 1250, 0.001, 50, 1250, [833, 1167]),
    ('proxy', 'r50_v1_rfs'): ('iters', 1000, 0.001, 50, 1000, [667, 917]),
    ('proxy', 'loce_r50_v1'): ('iters', 250, 0.001, 16, 250, [125, 208]),
}


@pytest.mark.parametrize('scale, run', sorted(CASES), ids=lambda x: x)
def test_schedules_match_the_hand_computed_ones(scale, run):
    loop, length, start, warmup, end, steps = CASES[scale, run]
    cfg = _at(scale, run)
    assert _schedule(cfg) == (pytest.approx(start), warmup, end, steps)
    assert all(not s.by_epoch for s in cfg.param_scheduler)
    if loop == 'epochs':
        assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
        assert (cfg.train_cfg.max_epochs, cfg.default_hooks.checkpoint.interval) == (length, 1)
        assert cfg.train_cfg.val_begin > length
    else:
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == length
        assert cfg.train_cfg.val_begin > length  # no validation inside training
        assert cfg.default_hooks.checkpoint.interval == (length + 1) // 2
        assert not cfg.default_hooks.checkpoint.by_epoch and not cfg.log_processor.by_epoch


def test_the_smoke_trains_on_the_subset_and_the_proxy_on_the_whole_set():
    ann = {run: _at('smoke', run).train_dataloader.dataset.ann_file
           for run in ('r50_v1', 'loce_r50_v1', 'bags_r50_v05')}
    assert ann == {'r50_v1': 'annotations/lvis_v1_train_finetune.json',
                   'loce_r50_v1': 'annotations/lvis_v1_train_finetune.json',
                   'bags_r50_v05': 'annotations/lvis_v0.5_train_finetune.json'}
    rfs = _at('smoke', 'r50_v1_rfs').train_dataloader.dataset
    assert rfs.type == 'ClassBalancedDataset' and rfs.oversample_thr == 0.3
    assert rfs.dataset.ann_file == 'annotations/lvis_v1_train_finetune.json'
    assert rfs.dataset.metainfo['classes'][0] == 'blue_circle'
    proxy = _at('proxy', 'loce_r50_v1').train_dataloader.dataset
    assert proxy.ann_file == 'annotations/lvis_v1_train.json'


def test_models_losses_and_memory_take_the_scales_sizes():
    eql = _at('smoke', 'eql_r101_v1').model
    assert eql.backbone.depth == 34 and eql.backbone.base_channels == 16
    assert eql.roi_head.bbox_head.num_classes == eql.roi_head.bbox_head.loss_cls.num_classes == 16
    assert eql.roi_head.bbox_head.loss_cls.lambda_ == 1.1e-3  # the method's own setting stays
    loce = _at('proxy', 'loce_r50_v1').model
    assert loce.backbone.depth == 18 and loce.roi_head.mfs.memory_size == 80
    assert loce.roi_head.mfs.features_per_class == 4  # the full config's
    assert 'num_classes' not in loce.roi_head.bbox_head.loss_cls


def test_a_full_scale_run_is_not_shrunk():
    cfg = _at('full', 'r50_v1')
    assert cfg.train_cfg.max_epochs == 24 and cfg.model.backbone.depth == 50


def test_a_schedule_the_shrink_has_no_length_for_is_refused():
    cfg = runconfig.resolve(MATRIX, 'full', 'bags_r50_v05', 0)
    rules = shrink.load(mx.shrink_path(MATRIX, 'proxy'))
    with pytest.raises(SystemExit, match='no length for a schedule of 12 epochs'):
        shrink.apply(cfg, rules, 'here')


def test_a_missing_shrink_file_is_refused(tmp_path):
    with pytest.raises(SystemExit, match='shrink file of a scale does not exist'):
        shrink.load(tmp_path / 'nope.py')
