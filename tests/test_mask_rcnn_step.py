"""A stock Mask R-CNN R50-FPN, built through the registry with loce imported, trains and predicts on CPU."""
from pathlib import Path

import mmdet
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdet.registry import MODELS

from loce.testing import detection_batch


def test_mask_rcnn_r50_fpn_trains_one_step_and_predicts():
    base = Path(mmdet.__file__).parent / '.mim/configs/_base_/models/mask-rcnn_r50_fpn.py'
    cfg = Config.fromfile(base)
    cfg.custom_imports = dict(imports=['loce'], allow_failed_imports=False)
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    model.train()
    data = model.data_preprocessor(detection_batch(num_classes=80), training=True)
    losses = model(**data, mode='loss')
    total, log_vars = model.parse_losses(losses)
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    before = model.roi_head.bbox_head.fc_cls.weight.detach().clone()
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert not torch.equal(before, model.roi_head.bbox_head.fc_cls.weight)

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(detection_batch(num_classes=80, seed=1), training=False)
        results = model(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        pred = result.pred_instances
        h, w = result.ori_shape
        assert pred.bboxes.shape[1] == 4 and len(pred.bboxes) == len(pred.scores) == len(pred.labels)
        assert (pred.bboxes[:, 0::2] >= 0).all() and (pred.bboxes[:, 0::2] <= w).all()
        assert (pred.bboxes[:, 1::2] >= 0).all() and (pred.bboxes[:, 1::2] <= h).all()
        assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
        assert pred.masks.shape[1:] == (h, w)
