# Stage 1 on LVIS v0.5 (1230 classes, paper Table 5); only the data and class count change.
_base_ = './mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

data_root = 'data/lvis_v0.5/'

model = dict(
    roi_head=dict(bbox_head=dict(num_classes=1230), mask_head=dict(num_classes=1230)))

train_dataloader = dict(
    dataset=dict(
        type='LVISV05Dataset',
        data_root=data_root,
        ann_file='annotations/lvis_v0.5_train.json',
        data_prefix=dict(img='train2017/')))
val_dataloader = dict(
    dataset=dict(
        type='LVISV05Dataset',
        data_root=data_root,
        ann_file='annotations/lvis_v0.5_val.json',
        data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/lvis_v0.5_val.json')
test_evaluator = val_evaluator
