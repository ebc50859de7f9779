# Shrinks shared by the smoke twins (configs/smoke/<stem>-tiny.py). Each twin inherits its full
# config and this file, and assigns these pieces, so a smoke run differs from its full run only
# here: ResNet-18 for "r50" (ResNet-34 for "r101") at a quarter width, no pretrained weights,
# 32 FPN/RoI channels, 64 sampled RoIs per image, ~128 px images, the real schedules scaled down,
# memory M=16.
# Sized for the synthetic LVIS of pipeline/data/synthetic.py (smoke_settings: 16 classes,
# 300 train images of 128 px) on one CPU core.
tiny_classes = (
    'blue_circle', 'blue_diamond', 'blue_square', 'blue_triangle', 'green_circle',
    'green_diamond', 'green_square', 'green_triangle', 'red_circle', 'red_diamond', 'red_square',
    'red_triangle', 'yellow_circle', 'yellow_diamond', 'yellow_square', 'yellow_triangle')

tiny_model = dict(
    # Trained from scratch here, so no stage is frozen and BN learns (stage 2 freezes it all).
    # A quarter of ResNet's widths (16 stem channels) and 32 FPN/RoI channels: the smoke checks
    # the machinery, and these sizes cut a training iteration about 4x.
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=len(tiny_classes)),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=len(tiny_classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=150),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))
tiny_mfs = dict(memory_size=16)

# 1333 x (640..800) scaled by 128/800, as the 128 px images are to 800 px ones.
tiny_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomChoiceResize',
        scales=[(213, 102), (213, 108), (213, 113), (213, 118), (213, 123), (213, 128)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
tiny_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(213, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
tiny_loader = dict(num_workers=0, persistent_workers=False)
tiny_train_set_v1 = dict(
    data_root='data/smoke/lvis_v1/', metainfo=dict(classes=tiny_classes),
    pipeline=tiny_train_pipeline)
tiny_val_set_v1 = dict(
    data_root='data/smoke/lvis_v1/', metainfo=dict(classes=tiny_classes),
    pipeline=tiny_test_pipeline)
tiny_evaluator_v1 = dict(ann_file='data/smoke/lvis_v1/annotations/lvis_v1_val.json')
tiny_train_set_v05 = dict(tiny_train_set_v1, data_root='data/smoke/lvis_v0.5/')
tiny_val_set_v05 = dict(tiny_val_set_v1, data_root='data/smoke/lvis_v0.5/')
tiny_evaluator_v05 = dict(ann_file='data/smoke/lvis_v0.5/annotations/lvis_v0.5_val.json')
# Fine-tuning sees half of the train images: 75 iterations an epoch, which keeps the 15 fine-tune
# runs of the smoke DAG within its time budget. The data stage writes that half as a
# class-covering subset (pipeline/data/subset.py; `finetune_images: 150` of the smoke scale in
# pipeline/experiments.yaml), so every class is present in it.
tiny_finetune_set_v1 = dict(tiny_train_set_v1, ann_file='annotations/lvis_v1_train_finetune.json')
tiny_finetune_set_v05 = dict(tiny_train_set_v05,
                             ann_file='annotations/lvis_v0.5_train_finetune.json')

# Schedules: one epoch each (stage 1: 150 iterations, 300 images at batch 2; stage 2: 75), the
# real ones scaled into it by iteration: stage 1 steps at 2/3 and 11/12 (as epochs 16 and 22 of
# 24), stage 2 at 1/2 and 5/6 (as 3 and 5 of 6), short linear warm-ups. The lr follows the
# linear scaling rule from the paper's batch of 16 (0.02 -> 0.0025 at batch 2; unscaled, training from scratch diverges).
# No validation inside training (the pipeline evaluates separately); a checkpoint every epoch.
tiny_auto_scale_lr = dict(enable=True, base_batch_size=16)
tiny_pretrain_cfg = dict(max_epochs=1, val_begin=2)
tiny_pretrain_schedule = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=150, milestones=[100, 138],
         gamma=0.1),
]
tiny_finetune_cfg = dict(max_epochs=1, val_begin=2)
tiny_finetune_schedule = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=5),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=75, milestones=[38, 63],
         gamma=0.1),
]
tiny_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=2))

# For the Table 5 baselines (configs/baselines/, twins here). Losses that size class buffers take
# the tiny class count as the bbox head does.
tiny_loss_cls = dict(num_classes=len(tiny_classes))
# 1x (12-epoch) end-to-end schedules: the smoke 2x (150 iterations) halved by iteration, as the
# fine-tune schedule above is: one epoch of the 150-image half (tiny_finetune_set_*, 75
# iterations), steps at 2/3 and 11/12 (as epochs 8 and 11 of 12), the 2x's warm-up.
tiny_1x_schedule = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=75, milestones=[50, 69], gamma=0.1),
]
# RFS on the smoke set: LVIS's threshold 1e-3 (100 of ~100k images) is 0.3 of its 300 images
# (see mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1-tiny.py); the repeats make an epoch
# of the full set ~309 iterations.
tiny_rfs_thr = 0.3
