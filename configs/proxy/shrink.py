# The proxy scale's shrink, applied by pipeline/shrink.py to the full configs
# as configs/smoke/shrink.py is at the smoke scale. The proxy is sized so that LOCE's effect can
# be measured above seed noise on 2 CPU cores (the design and its pre-registered criteria:
# results/proxy/REPORT.md): the synthetic LVIS of the proxy scale in pipeline/experiments.yaml
# (25 classes: 5 frequent, 12 common, 8 rare; 1000 train / 300 val images of 128 px; every rare
# class with at least 30 val instances), ResNet-18 Mask R-CNN from scratch with 64 FPN/RoI
# channels, schedules counted in iterations of batch 2 (500 iterations are one epoch of the train
# set): stage 1 ("24 epochs") 1000 iterations; the 30-epoch baseline 1250 (30/24 of it); stage 2
# ("6 epochs") 250 (6/24 of it) on the whole train set; steps at the full schedules' fractions.
_base_ = '../_base_/synthetic_128px.py'  # pipelines, loader, lr scaling

classes = (
    'blue_circle', 'blue_diamond', 'blue_square', 'blue_star', 'blue_triangle', 'green_circle',
    'green_diamond', 'green_square', 'green_star', 'green_triangle', 'magenta_circle',
    'magenta_diamond', 'magenta_square', 'magenta_star', 'magenta_triangle', 'red_circle',
    'red_diamond', 'red_square', 'red_star', 'red_triangle', 'yellow_circle', 'yellow_diamond',
    'yellow_square', 'yellow_star', 'yellow_triangle')

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=150),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))
depths = {50: 18}
mfs = dict(memory_size=80)  # the paper's M

# RFS's threshold 0.1 is LVIS's 100 images of ~100k (1e-3) in these 1000; its repeats make a
# 1618-image epoch. It trains as many iterations as stage 1 with random sampling (1000, about 1.2
# of its epochs rather than 2), to keep the proxy within its time budget: it is only the model of
# Figure 4(b).
rfs_thr = 0.1

# Schedules, by the full schedule's length in epochs, counted in iterations.
lengths = {24: dict(iters=1000), 30: dict(iters=1250), 6: dict(iters=250)}
warmup = dict(pretrain=50, finetune=16)
# No validation inside training (the pipeline evaluates separately); a checkpoint every half run.
hooks = dict(logger=dict(interval=50), checkpoint=dict(max_keep_ckpts=2))
