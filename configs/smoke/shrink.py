# The smoke scale's shrink: how pipeline/runconfig.py (`apply_shrink`) turns any full config
# (configs/, ablations and baselines included) into its smoke run. A smoke run differs from its
# full run only here: ResNet-18 for "r50" (ResNet-34 for "r101") at a quarter width, no
# pretrained weights, 32 FPN/RoI channels, 64 sampled RoIs per image, ~128 px images, memory
# M=16, and the real schedules scaled down. Sized for the synthetic LVIS of
# pipeline/data/synthetic.py (16 classes, 300 train images of 128 px) on one CPU core. The data
# roots come from `datasets:` in pipeline/experiments.yaml, as at every scale.
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
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))
depths = {50: 18, 101: 34}  # the full backbone's depth -> the smoke's
mfs = dict(memory_size=16)  # merged into the memory of runs that have one

# 1333 x (640..800) scaled by 128/800, as the 128 px images are to 800 px ones.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomChoiceResize',
        scales=[(213, 102), (213, 108), (213, 113), (213, 118), (213, 123), (213, 128)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(213, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
loader = dict(num_workers=0, persistent_workers=False)
# RFS's threshold 1e-3 is 100 images of LVIS v1's ~100k: classes seen in fewer images are
# repeated. The synthetic set keeps LVIS's image counts per frequency group in 300 images, so the
# same 100-image threshold is 0.3 here (at 1e-3 nothing would be repeated).
rfs_thr = 0.3
# The lr follows the linear scaling rule from the paper's batch of 16 (0.02 -> 0.0025 at batch
# 2; unscaled, training from scratch diverges).
auto_scale_lr = dict(enable=True, base_batch_size=16)

# Schedules, by the full schedule's length (epochs; `iters` for an iteration-based loop): one
# epoch of the train set (`epochs=1`) or a number of iterations, on the whole train set or on the
# `finetune` half, a class-covering subset the data stage writes (`finetune_images: 150` in
# pipeline/experiments.yaml): 75 iterations an epoch, which keeps the smoke's 15 fine-tunes in
# its time budget. 12 epochs (BAGS, the 1x Seesaw) are half the smoke 2x by iteration, as the
# fine-tune is; 30 epochs are 30/24 of the smoke stage 1 (188 iterations); BALMS's 22k iterations
# (about 6 v0.5 epochs) are the fine-tunes' 75. Steps keep the full schedule's fractions.
lengths = {
    24: dict(epochs=1),
    30: dict(iters=188),
    12: dict(epochs=1, subset='finetune'),
    6: dict(epochs=1, subset='finetune'),
    'iters': dict(iters=75, subset='finetune'),
}
# Iterations in one epoch, for the steps of an epoch-based run: the RFS repeats make an epoch of
# the train set about 309 iterations (618 images) on the smoke data.
epoch_iters = dict(train=150, finetune=75, train_rfs=309)
# Linear warm-ups in iterations, by kind of run (an iteration-based full schedule scales its own).
warmup = dict(pretrain=20, finetune=5)
# No validation inside training (the pipeline evaluates separately); a checkpoint every epoch
# (every half run for iteration loops).
hooks = dict(logger=dict(interval=10), checkpoint=dict(max_keep_ckpts=2))

# What a run needs beyond the rules above, by config stem.
runs = {
    # ECM's 10k-iteration warm-up is about one of the 24 full epochs: 309 / 24 = 13 iterations.
    'baselines/ecm_mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1': dict(warmup=13),
}
