# LOCE stage 1 (paper Sec. 4.1): Mask R-CNN R50-FPN, softmax CE, normalised mask predictor
# ("normed mask", as Seesaw Loss), random image sampling, 24 epochs (lr 0.02, steps 16/22,
# 500-iteration warm-up), multi-scale 640-800 x 1333 with flip, 2 images per GPU, on LVIS v1.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['loce'], allow_failed_imports=False)

model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=1203),
        mask_head=dict(
            num_classes=1203,
            predictor_cfg=dict(type='NormedConv2d', tempearture=20))),  # mmdet's spelling
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))

# Random image sampling: the base wraps the dataset in ClassBalancedDataset (RFS); unwrap it.
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='LVISV1Dataset',
        data_root='data/lvis_v1/',
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline={{_base_.train_pipeline}}))

val_evaluator = dict(
    _delete_=True,
    type='FastLVISMetric',
    ann_file='data/lvis_v1/annotations/lvis_v1_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator

train_cfg = dict(val_interval=24)
randomness = dict(seed=0)
