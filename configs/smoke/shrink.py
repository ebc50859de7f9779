# The smoke scale's shrink: how pipeline/shrink.py turns any full config
# (configs/, ablations and baselines included) into its smoke run. A smoke run differs from its
# full run only here: ResNet-18 for "r50" (ResNet-34 for "r101") at a quarter width, no
# pretrained weights, 32 FPN/RoI channels, 64 sampled RoIs per image, ~128 px images, memory
# M=16, and the real schedules scaled down. Sized for the synthetic LVIS of
# pipeline/data/synthetic.py (16 classes, 300 train images of 128 px) on one CPU core. The data
# roots come from `datasets:` in pipeline/experiments.yaml, as at every scale.
_base_ = '../_base_/synthetic_128px.py'  # pipelines, loader, lr scaling

classes = (
    'blue_circle', 'blue_diamond', 'blue_square', 'blue_triangle', 'green_circle',
    'green_diamond', 'green_square', 'green_triangle', 'red_circle', 'red_diamond', 'red_square',
    'red_triangle', 'yellow_circle', 'yellow_diamond', 'yellow_square', 'yellow_triangle')

# Merged into every model. Trained from scratch, so no stage is frozen and BN learns (stage 2
# freezes it all). A quarter of ResNet's widths (16 stem channels) and 32 FPN/RoI channels: the
# smoke checks the machinery, and these sizes cut a training iteration about 4x.
model = dict(
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=150),
        rcnn=dict(sampler=dict(num=64))),
    # 20 detections per image (of at most 4 objects): masks are most of the evaluation's time.
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))
depths = {50: 18, 101: 34}  # the full backbone's depth -> the smoke's
mfs = dict(memory_size=16)  # merged into the memory of runs that have one

# RFS's threshold 1e-3 is 100 images of LVIS v1's ~100k: classes seen in fewer images are
# repeated. The synthetic set keeps LVIS's image counts per frequency group in 300 images, so the
# same 100-image threshold is 0.3 here (at 1e-3 nothing would be repeated).
rfs_thr = 0.3

# Schedules, by the full schedule's length (epochs; `iters` for an iteration-based loop). Every
# smoke run trains on the `finetune` subset: 100 class-covering train images the data stage
# writes (`finetune_images` in pipeline/experiments.yaml; the 300 images keep LVIS's frequency
# groups, the subset keeps the runs short), 50 iterations of batch 2 an epoch. Stage 1, the
# end-to-end 2x and 1x and the fine-tunes run one epoch of it; 30 epochs are 30/24 of it (63
# iterations, so that loop counts iterations); BALMS's 22k iterations (about 6 v0.5 epochs) the
# fine-tunes' 50; an RFS run as many iterations as a plain epoch (pipeline/shrink.py). So both
# loops run, as at the full scale. Steps keep the full schedule's fractions.
lengths = {
    24: dict(epochs=1, subset='finetune'),
    30: dict(iters=63, subset='finetune'),
    12: dict(epochs=1, subset='finetune'),
    6: dict(epochs=1, subset='finetune'),
    'iters': dict(iters=50, subset='finetune'),
}
epoch_iters = dict(finetune=50)  # iterations in one epoch of each subset
# Linear warm-ups in iterations, by kind of run (an iteration-based full schedule scales its
# own): training from scratch needs about 20 to stay stable whatever the full warm-up was.
warmup = dict(pretrain=20, finetune=5)
# No validation inside training (the pipeline evaluates separately); a checkpoint every epoch
# (every half run for iteration loops).
hooks = dict(logger=dict(interval=10), checkpoint=dict(max_keep_ckpts=2))
