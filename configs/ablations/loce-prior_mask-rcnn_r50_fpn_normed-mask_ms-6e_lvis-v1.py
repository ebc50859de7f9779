# Table 1, last row: EBL and MFS guided by the dataset prior P(y) (training instances per class,
# counted by MemoryWarmupHook) instead of the mean classification score.
_base_ = '../loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py'

model = dict(
    roi_head=dict(indicator=dict(_delete_=True, type='ClassPrior', bg_score=0.01)))
