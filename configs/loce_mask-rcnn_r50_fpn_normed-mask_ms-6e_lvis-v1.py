# LOCE stage 2 (paper Sec. 3-4): fine-tune the stage-1 model for 6 epochs (lr 0.02, steps 3/5,
# 500-iteration warm-up) with the mean classification score (alpha 0.9, background 0.01),
# Equilibrium Loss and Memory-augmented Feature Sampling (M=80, k=8, m=4), the backbone, neck
# and shared FCs frozen. Stage-1 weights come with `--cfg-options load_from=<checkpoint>`.
_base_ = './mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

model = dict(
    backbone=dict(init_cfg=None),  # every weight comes from the stage-1 checkpoint
    roi_head=dict(
        type='LOCERoIHead',
        indicator=dict(type='MeanScore', alpha=0.9, bg_score=0.01),
        mfs=dict(
            memory_size=80,
            sampled_classes=8,
            features_per_class=4,
            device='cpu',
            dtype='float32'),
        bbox_head=dict(
            loss_cls=dict(_delete_=True, type='EquilibriumLoss', loss_weight=1.0))))

train_cfg = dict(max_epochs=6, val_interval=6)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=6, by_epoch=True, milestones=[3, 5], gamma=0.1),
]

custom_hooks = [
    dict(type='FreezeRepresentationHook'),
    dict(type='MemoryWarmupHook', images_per_class=5),
]
