# Table 5 "RFS", R50 on LVIS v0.5: our v0.5 stage 1 (softmax CE, normed mask, 24 epochs) with
# repeat factor sampling (ClassBalancedDataset, oversample_thr 1e-3) instead of random sampling,
# as MMDetection's configs/lvis/mask-rcnn_r50_fpn_sample1e-3_ms-2x_lvis-v0.5.py trains it (2x on
# v0.5). The normed mask predictor is kept so the RFS row matches its R50 v1 model, the
# r50_v1_rfs run of ../mask-rcnn_r50_fpn_normed-mask_sample1e-3-ms-2x_lvis-v1.py.
_base_ = '../mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v0.5.py'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset={{_base_.train_dataloader.dataset}}))
