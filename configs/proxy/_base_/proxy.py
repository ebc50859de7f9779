# Shrinks shared by the proxy twins (configs/proxy/<stem>-proxy.py), as configs/smoke/_base_/tiny.py
# is for the smoke twins. The proxy is sized so that LOCE's effect can be measured above seed
# noise on 2 CPU cores (the design and its pre-registered criteria: results/proxy/REPORT.md and
# the README): the synthetic LVIS of the proxy scale in pipeline/experiments.yaml (25 classes:
# 5 frequent, 12 common, 8 rare; 1000 train / 300 val images of 128 px; every rare class with at
# least 30 val instances), ResNet-18 Mask R-CNN from scratch with 64 FPN/RoI channels, schedules
# counted in iterations of batch 2 (500 iterations are one epoch of the train set):
#   stage 1 ("24 epochs") 1000 iterations; the 30-epoch baseline 1250 (30/24 of it); stage 2
#   ("6 epochs") 250 (6/24 of it) on the whole train set; steps at the full schedules' fractions.
proxy_classes = (
    'blue_circle', 'blue_diamond', 'blue_square', 'blue_star', 'blue_triangle', 'green_circle',
    'green_diamond', 'green_square', 'green_star', 'green_triangle', 'magenta_circle',
    'magenta_diamond', 'magenta_square', 'magenta_star', 'magenta_triangle', 'red_circle',
    'red_diamond', 'red_square', 'red_star', 'red_triangle', 'yellow_circle', 'yellow_diamond',
    'yellow_square', 'yellow_star', 'yellow_triangle')

proxy_model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=len(proxy_classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=len(proxy_classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=150),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))
proxy_mfs = dict(memory_size=80)  # the paper's M

# 1333 x (640..800) scaled by 128/800, as the 128 px images are to 800 px ones.
proxy_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomChoiceResize',
        scales=[(213, 102), (213, 108), (213, 113), (213, 118), (213, 123), (213, 128)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
proxy_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(213, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
proxy_loader = dict(num_workers=0, persistent_workers=False)
proxy_train_set = dict(
    data_root='data/proxy/lvis_v1/', metainfo=dict(classes=proxy_classes),
    pipeline=proxy_train_pipeline)
proxy_val_set = dict(
    data_root='data/proxy/lvis_v1/', metainfo=dict(classes=proxy_classes),
    pipeline=proxy_test_pipeline)
proxy_evaluator = dict(ann_file='data/proxy/lvis_v1/annotations/lvis_v1_val.json')

# The lr follows the linear scaling rule from the paper's batch of 16 (0.02 -> 0.0025 at batch 2).
proxy_auto_scale_lr = dict(enable=True, base_batch_size=16)

# Schedules, counted in iterations: (loop, lr schedule, hooks) per kind of run.
proxy_log = dict(by_epoch=False)
# No validation inside training (the pipeline evaluates separately): an iteration-based loop
# validates after its last iteration unless val_begin lies beyond it.
proxy_pretrain_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1000,
                          val_begin=10 ** 6, val_interval=10 ** 6)
proxy_pretrain_schedule = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=1000, milestones=[667, 917], gamma=0.1),
]
proxy_pretrain_hooks = dict(logger=dict(interval=50),
                            checkpoint=dict(interval=500, by_epoch=False, max_keep_ckpts=2))
# 30 epochs end to end: 1250 iterations, steps at 2/3 and 28/30.
proxy_30e_cfg = dict(proxy_pretrain_cfg, max_iters=1250)
proxy_30e_schedule = [
    proxy_pretrain_schedule[0],
    dict(proxy_pretrain_schedule[1], end=1250, milestones=[833, 1167]),
]
proxy_30e_hooks = dict(proxy_pretrain_hooks, checkpoint=dict(interval=625, by_epoch=False,
                                                             max_keep_ckpts=2))
# Stage 2, 6/24 of stage 1: 250 iterations, steps at 1/2 and 5/6 (3 and 5 of 6 epochs).
proxy_finetune_cfg = dict(proxy_pretrain_cfg, max_iters=250)
proxy_finetune_schedule = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=16),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=250, milestones=[125, 208], gamma=0.1),
]
proxy_finetune_hooks = dict(proxy_pretrain_hooks, checkpoint=dict(interval=125, by_epoch=False,
                                                                  max_keep_ckpts=2))
