# Beyond the paper, R50 on LVIS v1: Seesaw Loss in LOCE's own setting, random sampling with the
# normed mask predictor, 24 epochs: MMDetection's configs/seesaw_loss/
# mask-rcnn_r50_fpn_seesaw-loss-normed-mask_random-ms-2x_lvis-v1.py (reported 25.6 box / 25.4 mask
# AP), which is our R50 stage 1 with Seesaw Loss (p 0.8, q 2.0) and a cosine classifier
# (NormedLinear, temperature 20). The same-setting end-to-end peer of LOCE, which also uses no RFS.
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),  # mmdet's spelling
            loss_cls=dict(
                _delete_=True, type='SeesawLoss', p=0.8, q=2.0, num_classes=1203,
                loss_weight=1.0))))
