# Smoke twin of the full config named first in _base_, shrunk for CPU by _base_/tiny.py.
# 30 epochs are 30/24 of the smoke stage 1 (one epoch of 150 iterations): 188 iterations, so the
# loop counts iterations; the steps keep the full schedule's shape (2/3 and 28/30: 125 and 175).
_base_ = ['../mask-rcnn_r50_fpn_normed-mask_random-ms-30e_lvis-v1.py', './_base_/tiny.py']
# The datasets below live here (_base_/tiny.py); the pipeline relocates paths from it.
data_root = 'data/smoke/lvis_v1/'

model = _base_.tiny_model

train_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_train_set_v1)
val_dataloader = dict(_base_.tiny_loader, dataset=_base_.tiny_val_set_v1)
test_dataloader = val_dataloader
val_evaluator = _base_.tiny_evaluator_v1
test_evaluator = val_evaluator

# no validation inside training: an iteration-based loop validates after its last iteration
# unless val_begin lies beyond it
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=188, val_begin=10 ** 6,
                 val_interval=10 ** 6)
param_scheduler = [
    _base_.tiny_pretrain_schedule[0],
    dict(_base_.tiny_pretrain_schedule[1], end=188, milestones=[125, 175]),
]
default_hooks = dict(_base_.tiny_hooks, checkpoint=dict(interval=94, by_epoch=False,
                                                         max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = _base_.tiny_auto_scale_lr
