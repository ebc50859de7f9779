# Stage 1 with a ResNet-101 backbone (paper Table 5), otherwise as the R50 model.
_base_ = './mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
