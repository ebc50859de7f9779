# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
_base_ = [
    '../baselines/balms_mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-22k_lvis-v0.5.py',
    './_base_/tiny.py',
]
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v0.5/'

model = dict(
    _base_.tiny_model,
    roi_head=dict(
        _base_.tiny_model.roi_head,
        bbox_head=dict(_base_.tiny_model.roi_head.bbox_head, loss_cls=_base_.tiny_loss_cls)))

train_dataloader = dict(
    _base_.tiny_loader,
    dataset=dict(oversample_thr=_base_.tiny_rfs_thr, dataset=_base_.tiny_finetune_set_v05))
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v05)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v05
test_evaluator = val_evaluator

# 22k iterations (about 6 v0.5 epochs) as the smoke fine-tunes' 75, by iteration: steps at
# 11/22 and 18/22, the 1000-iteration warm-up 3 iterations.
train_cfg = dict(max_iters=75, val_begin=76, val_interval=75)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=75, milestones=[38, 61],
         gamma=0.1),
]
default_hooks = dict(
    _base_.tiny_hooks,
    checkpoint=dict(by_epoch=False, interval=75, max_keep_ckpts=2))
auto_scale_lr = _base_.tiny_auto_scale_lr
