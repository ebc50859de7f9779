# LOCE fine-tuning of the ResNet-101 stage-1 model (paper Table 5).
_base_ = './loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py'

model = dict(backbone=dict(depth=101))
