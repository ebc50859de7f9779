# Table 5 "BAGS", R50 on LVIS v0.5, decoupled: Balanced Group Softmax trained on our R50
# stage-1 model (weights with `--cfg-options load_from=<checkpoint>`), only the last classifier FC
# trains, as FishYuLi/BalancedGroupSoftmax configs/bags/gs_mask_rcnn_r50_fpn_1x_lvis.py
# (selectp = 1): 12 epochs, SGD lr 0.01, steps at 8 and 11, 500-iteration warm-up from 1/3,
# gradient clipping at norm 35, random sampling. Groups by training instance count (bins 10, 100,
# 1000, plus background), "others" sampled at beta = 8 (loce/models/group_softmax_loss.py, the
# channel layout of the v1 port in tztztztztz/eqlv2 mmdet/models/losses/group_softmax.py);
# instance counts from ClassStatisticsHook. The classifier has C + 1 + 5 outputs, so it starts
# from its initialisation, not from stage 1. Kept from our harness: multi-scale training (the
# reference trains at 1333 x 800) and the stage-1 test settings.
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5.py'

model = dict(
    backbone=dict(init_cfg=None),  # every weight but the classifier comes from stage 1
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True, type='GroupSoftmaxLoss', num_classes=1230, beta=8,
                bin_split=(10, 100, 1000), loss_weight=1.0))))

train_cfg = dict(max_epochs=12, val_interval=12)
optim_wrapper = dict(
    optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

custom_hooks = [
    dict(type='FreezeRepresentationHook', trainable=('roi_head.bbox_head.fc_cls', )),
    dict(type='ClassStatisticsHook'),
]
