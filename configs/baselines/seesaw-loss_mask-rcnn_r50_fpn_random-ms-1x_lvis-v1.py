# Table 5 "Seesaw Loss*", R50 on LVIS v1, end to end with the 1x schedule the paper marks: the
# R50 version of ./seesaw-loss_mask-rcnn_r101_fpn_random-ms-2x_lvis-v1.py (MMDetection's
# configs/seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1.py) with MMDetection's
# schedule_1x: 12 epochs, steps at 8 and 11, the same 500-iteration warm-up.
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),  # mmdet's spelling
            loss_cls=dict(
                _delete_=True, type='SeesawLoss', p=0.8, q=2.0, num_classes=1203,
                loss_weight=1.0)),
        mask_head=dict(predictor_cfg=dict(_delete_=True, type='Conv'))))

train_cfg = dict(max_epochs=12, val_interval=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
