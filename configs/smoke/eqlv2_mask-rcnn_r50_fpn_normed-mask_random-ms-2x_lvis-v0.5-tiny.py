# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
_base_ = [
    '../baselines/eqlv2_mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5.py',
    './_base_/tiny.py',
]
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v0.5/'

model = dict(
    _base_.tiny_model,
    roi_head=dict(
        _base_.tiny_model.roi_head,
        bbox_head=dict(_base_.tiny_model.roi_head.bbox_head, loss_cls=_base_.tiny_loss_cls)))

train_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_train_set_v05)
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v05)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v05
test_evaluator = val_evaluator

train_cfg = _base_.tiny_pretrain_cfg
param_scheduler = _base_.tiny_pretrain_schedule
default_hooks = _base_.tiny_hooks
auto_scale_lr = _base_.tiny_auto_scale_lr
