# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
_base_ = [
    '../baselines/bags_mask-rcnn_r50_fpn_normed-mask_ms-12e_lvis-v0.5.py',
    './_base_/tiny.py',
]
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v0.5/'

model = dict(
    _base_.tiny_model,
    roi_head=dict(
        _base_.tiny_model.roi_head,
        bbox_head=dict(_base_.tiny_model.roi_head.bbox_head, loss_cls=_base_.tiny_loss_cls)))

train_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_finetune_set_v05)
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v05)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v05
test_evaluator = val_evaluator

train_cfg = _base_.tiny_finetune_cfg
# 12 fine-tune epochs: half the smoke 2x by iteration, one epoch of the 150-image half (75
# iterations), steps at 8/12 and 11/12, a short warm-up from 1/3 as the full config's.
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=5),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=75, milestones=[50, 69],
         gamma=0.1),
]
default_hooks = _base_.tiny_hooks
auto_scale_lr = _base_.tiny_auto_scale_lr
