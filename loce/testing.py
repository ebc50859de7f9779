"""Fake inputs for tests and benchmarks, as mmdet.testing has for MMDetection: a detection batch
of random images with box-shaped masks, in the form a detector's data_preprocessor takes."""
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData


def detection_batch(num_images=2, size=128, gts_per_image=3, num_classes=16, seed=0):
    """`num_images` square images with `gts_per_image` random boxes each (at least 16 px, inside
    the image), their box-shaped masks and random labels; deterministic in `seed`."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(num_images):
        inputs.append(torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8))
        xy = torch.randint(0, size // 2, (gts_per_image, 2), generator=g).float()
        wh = torch.randint(16, size // 2, (gts_per_image, 2), generator=g).float()
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        masks = np.zeros((gts_per_image, size, size), dtype=np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1.0, 1.0),
                                             batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.randint(0, num_classes, (gts_per_image,), generator=g),
            masks=BitmapMasks(masks, size, size))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
