# Beyond the paper (later method), R50 on LVIS v1, end to end: Effective Class-Margin Loss
# (ECCV 2022) as janghyuncho/ECM-Loss configs/effective_class_margin_loss/r50_ecm_2x.py trains it
# (reported 27.9 box / 27.5 mask AP): sigmoid ECM loss over C + 1 channels (fg_bg_ratio 6.3313,
# instance counts from ClassStatisticsHook), cosine classifier (NormedLinear, temperature 20) and
# normed mask predictor, repeat factor sampling (oversample_thr 1e-3), 24 epochs with steps at 20
# and 22, a 10k-iteration linear warm-up from 1e-4, gradient clipping at norm 5.
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),  # mmdet's spelling
            loss_cls=dict(
                _delete_=True, type='EffectiveClassMarginLoss', num_classes=1203,
                fg_bg_ratio=6.3313, loss_weight=1.0))))

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset={{_base_.train_dataloader.dataset}}))

optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.0001, by_epoch=False, begin=0, end=10000),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[20, 22], gamma=0.1),
]

custom_hooks = [dict(type='ClassStatisticsHook')]
