# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
_base_ = [
    '../ablations/loce-prior_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py',
    './_base_/tiny.py',
]
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v1/'

model = dict(
    _base_.tiny_model,
    roi_head=dict(_base_.tiny_model.roi_head, mfs=_base_.tiny_mfs))

train_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_finetune_set_v1)
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v1)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v1
test_evaluator = val_evaluator

train_cfg = _base_.tiny_finetune_cfg
param_scheduler = _base_.tiny_finetune_schedule
default_hooks = _base_.tiny_hooks
auto_scale_lr = _base_.tiny_auto_scale_lr
