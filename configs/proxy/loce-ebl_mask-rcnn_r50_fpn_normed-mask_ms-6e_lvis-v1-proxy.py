# Proxy twin of the full config named first in _base_, shrunk for CPU by _base_/proxy.py.
_base_ = ['../ablations/loce-ebl_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py', './_base_/proxy.py']
# The datasets below live here (_base_/proxy.py); the pipeline relocates paths from it.
data_root = 'data/proxy/lvis_v1/'

model = _base_.proxy_model

train_dataloader = dict(_base_.proxy_loader, dataset=_base_.proxy_train_set)
val_dataloader = dict(_base_.proxy_loader, dataset=_base_.proxy_val_set)
test_dataloader = val_dataloader
val_evaluator = _base_.proxy_evaluator
test_evaluator = val_evaluator

train_cfg = _base_.proxy_finetune_cfg
param_scheduler = _base_.proxy_finetune_schedule
default_hooks = _base_.proxy_finetune_hooks
log_processor = _base_.proxy_log
auto_scale_lr = _base_.proxy_auto_scale_lr
