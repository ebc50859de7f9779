# What the CPU scales' shrinks (configs/smoke/shrink.py, configs/proxy/shrink.py) share: the
# synthetic LVIS's 128 px images through the full configs' pipelines scaled to them, and
# single-process loading.
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
# The lr follows the linear scaling rule from the paper's batch of 16 (0.02 -> 0.0025 at batch
# 2; unscaled, training from scratch diverges).
auto_scale_lr = dict(enable=True, base_batch_size=16)
