# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
_base_ = [
    '../baselines/ecm_mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1.py',
    './_base_/tiny.py',
]
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v1/'

model = dict(
    _base_.tiny_model,
    roi_head=dict(
        _base_.tiny_model.roi_head,
        bbox_head=dict(_base_.tiny_model.roi_head.bbox_head, loss_cls=_base_.tiny_loss_cls)))

train_dataloader = dict(
    _base_.tiny_loader,
    dataset=dict(oversample_thr=_base_.tiny_rfs_thr, dataset=_base_.tiny_train_set_v1))
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v1)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v1
test_evaluator = val_evaluator

train_cfg = _base_.tiny_pretrain_cfg
# The repeats make an epoch ~309 iterations on the smoke data: steps at 20/24 and 22/24; the
# 10k-iteration warm-up is about one of the 24 full epochs, 309 / 24 = 13 iterations here.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.0001, by_epoch=False, begin=0, end=13),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=309, milestones=[258, 283],
         gamma=0.1),
]
default_hooks = _base_.tiny_hooks
auto_scale_lr = _base_.tiny_auto_scale_lr
