# Table 1: Equilibrium Loss guided by the mean score, without MFS.
_base_ = '../loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py'

model = dict(roi_head=dict(mfs=None))
