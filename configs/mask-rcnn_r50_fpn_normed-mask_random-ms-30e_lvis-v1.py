# Table 1's baseline as the paper trains it (Sec. 4.2): softmax CE with random sampling for 30
# epochs end to end, i.e. the length of stage 1 plus stage 2 with nothing frozen. The paper gives
# only the length; the steps keep the 2x schedule's shape: at 2/3 of it and two epochs before
# the end (epochs 20 and 28, as 16 and 22 of 24).
_base_ = './mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

train_cfg = dict(max_epochs=30, val_interval=30)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=30, by_epoch=True, milestones=[20, 28], gamma=0.1),
]
