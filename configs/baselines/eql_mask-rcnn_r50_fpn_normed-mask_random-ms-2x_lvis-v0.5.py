# Table 5 "EQL", R50 on LVIS v0.5, end to end, as EQL's own code trains it (tztztztztz/
# eql.detectron2 projects/EQL: configs/eql_mask_rcnn_R_50_FPN_1x.yaml and eql/cfg.py): sigmoid BCE
# over the C classes (loce/models/eql_loss.py, the formula of eqlv2's eql.py), lambda = 1.77e-3,
# the classifier bias initialised to the prior probability 0.001 (PRIOR_PROB), random sampling.
# Its "1x" is 90k iterations at batch 16, about 25 epochs of LVIS v0.5, which MMDetection writes as
# 2x for v0.5: our v0.5 stage-1 schedule (24 epochs, steps 16/22). Image-count frequencies from
# ClassStatisticsHook.
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True, type='EqualizationLoss', num_classes=1230, lambda_=1.77e-3,
                loss_weight=1.0),
            # mmdet's default head init, with the fc_cls bias -log((1 - 0.001) / 0.001)
            init_cfg=[
                dict(type='Normal', std=0.01, bias_prob=0.001, override=dict(name='fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
                dict(type='Xavier', distribution='uniform',
                     override=[dict(name='shared_fcs'), dict(name='cls_fcs'),
                               dict(name='reg_fcs')]),
            ])))

custom_hooks = [dict(type='ClassStatisticsHook')]
