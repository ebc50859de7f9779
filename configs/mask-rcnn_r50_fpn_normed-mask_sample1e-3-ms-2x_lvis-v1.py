# Stage 1 with repeat factor sampling (RFS, threshold 1e-3) instead of random sampling: the
# "softmax CE + RFS" model of the paper's Figure 4(b).
_base_ = './mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset={{_base_.train_dataloader.dataset}}))
