# Table 1, controlled row (beyond the paper, whose baseline trains 30 epochs end to end: see
# mask-rcnn_r50_fpn_normed-mask_random-ms-30e_lvis-v1.py): 6 more epochs of plain softmax CE with
# random sampling (24 + 6 = 30), in the same decoupled setting as the LOCE variants (frozen
# representation, same schedule), so the rows differ only by EBL and MFS. LOCERoIHead without
# MFS and with CE trains exactly like StandardRoIHead (its mean score is tracked, never used).
_base_ = '../loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py'

model = dict(
    roi_head=dict(
        mfs=None,
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True, type='CrossEntropyLoss', use_sigmoid=False,
                loss_weight=1.0))))
