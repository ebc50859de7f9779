# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
_base_ = ['../mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1.py', './_base_/tiny.py']
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v1/'

model = _base_.tiny_model

# RFS's threshold 1e-3 is 100 images of LVIS v1's ~100k: classes seen in fewer images are
# repeated. The synthetic set keeps LVIS's image counts per frequency group in 300 images, so
# the same 100-image threshold is 0.3 here (at 1e-3 nothing would be repeated).
train_dataloader = dict(
    _base_.tiny_loader,
    dataset=dict(oversample_thr=0.3, dataset=_base_.tiny_train_set_v1))
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v1)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v1
test_evaluator = val_evaluator

train_cfg = _base_.tiny_pretrain_cfg
# The repeats make an epoch ~309 iterations (618 images) on the smoke data: steps at 2/3, 11/12.
param_scheduler = [
    _base_.tiny_pretrain_schedule[0],
    dict(_base_.tiny_pretrain_schedule[1], end=309, milestones=[206, 283]),
]
default_hooks = _base_.tiny_hooks
auto_scale_lr = _base_.tiny_auto_scale_lr
