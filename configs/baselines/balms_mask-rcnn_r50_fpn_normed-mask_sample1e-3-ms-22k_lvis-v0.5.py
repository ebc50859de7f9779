# Table 5 "BALMS", R50 on LVIS v0.5, decoupled, WITHOUT the meta re-weighter: the plain Balanced
# Softmax row of BALMS's LVIS results (26.4 mask AP there; BALMS with the re-weighter 27.0), as
# cunjunyu/BalancedMetaSoftmax-InstanceSeg projects/BALMS/configs/classifier/
# balanced_softmax_decouple_resampling_mask_rcnn_R_50_FPN_1x.yaml trains it: from our v0.5 stage-1
# model (weights with `--cfg-options load_from=<checkpoint>`), only the classifier FC trains
# (DECOUPLE_TRAINING), repeat factor sampling (threshold 1e-3), 22k iterations at batch 16, SGD
# lr 0.02, steps at 11k and 18k, detectron2's default 1000-iteration linear warm-up from 1e-3.
# The loss is the reference's "sigmoid variant" over C classes
# (loce/models/balanced_softmax_loss.py), image-count frequencies from ClassStatisticsHook. The
# reference's base model is a sigmoid RFS model whose classifier it fine-tunes; ours is the
# softmax stage 1, so the C-way sigmoid classifier starts from the reference's initialisation
# (bias at the prior probability 0.001).
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5.py'

model = dict(
    backbone=dict(init_cfg=None),  # every weight but the classifier comes from stage 1
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True, type='BalancedSoftmaxLoss', num_classes=1230, loss_weight=1.0),
            # mmdet's default head init, with the fc_cls bias -log((1 - 0.001) / 0.001)
            init_cfg=[
                dict(type='Normal', std=0.01, bias_prob=0.001, override=dict(name='fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
                dict(type='Xavier', distribution='uniform',
                     override=[dict(name='shared_fcs'), dict(name='cls_fcs'),
                               dict(name='reg_fcs')]),
            ])))

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset={{_base_.train_dataloader.dataset}}))

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=22000, val_interval=22000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=22000, by_epoch=False, milestones=[11000, 18000],
         gamma=0.1),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2000))
log_processor = dict(by_epoch=False)

custom_hooks = [
    dict(type='FreezeRepresentationHook', trainable=('roi_head.bbox_head.fc_cls', )),
    dict(type='ClassStatisticsHook'),
]
