# Table 5 "Seesaw Loss", R101 on LVIS v1, end to end: MMDetection's
# configs/seesaw_loss/mask-rcnn_r101_fpn_seesaw-loss_random-ms-2x_lvis-v1.py on our R101 stage 1.
# Seesaw Loss (p 0.8, q 2.0, C + 2 logits: classes and objectness) with a cosine classifier
# (NormedLinear, temperature 20), random sampling, 24 epochs, the plain mask predictor (the
# "Norm Mask N" model; the normed one is the beyond-the-paper R50 row).
_base_ = '../mask-rcnn_r101_fpn_normed-mask_random-ms-2x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),  # mmdet's spelling
            loss_cls=dict(
                _delete_=True, type='SeesawLoss', p=0.8, q=2.0, num_classes=1203,
                loss_weight=1.0)),
        mask_head=dict(predictor_cfg=dict(_delete_=True, type='Conv'))))
