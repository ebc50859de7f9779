# Table 1: Memory-augmented Feature Sampling guided by the mean score, with plain softmax CE.
_base_ = '../loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True, type='CrossEntropyLoss', use_sigmoid=False,
                loss_weight=1.0))))
