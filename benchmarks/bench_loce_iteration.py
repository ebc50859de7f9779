"""LOCE's cost per fine-tuning iteration against plain fine-tuning, and its memory at LVIS scale.

Both iterations use the same frozen Mask R-CNN, by default R50-FPN built from the LVIS v1 LOCE
config (1203 classes, 512 RoIs per image; backbone, neck and shared FCs frozen), and the same
batch:
- plain: StandardRoIHead with softmax cross-entropy;
- LOCE: LOCERoIHead (mean score, EBL, MFS with M=80, k=8, m=4), whose memory is pre-filled
  for a set of classes that the mean score makes the sampler draw, so every iteration appends
  the full k x m memory features, as after the warm-up on LVIS.
An iteration is preprocessing, the loss forward, backward and an SGD step. The two alternate,
after warm-up iterations, and the medians are compared. Then the memory's size at LVIS v1 scale
(1203 classes x 80 slots x 256x7x7 RoI features) is computed from FeatureMemory, for float32
and float16, without allocating it.

    .venv/bin/python benchmarks/bench_loce_iteration.py                # 320 px, 5 repeats
    .venv/bin/python benchmarks/bench_loce_iteration.py --size 800 --repeats 3
    .venv/bin/python -m pipeline resolve --scale smoke --run loce_r50_v1   # the smoke config
    .venv/bin/python benchmarks/bench_loce_iteration.py --size 128 --gts 3 --repeats 30 \
        --config work/smoke/configs/loce_r50_v1/seed0.py
"""
import argparse
import statistics
import time
from pathlib import Path

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import loce.models  # noqa: F401  (registers LOCERoIHead, EquilibriumLoss)
from loce.engine.freeze_hook import freeze_except
from loce.models.mfs import FeatureMemory
from loce.testing import detection_batch

CONFIG = (Path(__file__).resolve().parents[1]
          / 'configs/loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py')
FILLED_CLASSES = 64  # at most; all classes of a smaller model


def make_batch(size, gts_per_image, num_classes, seed=0):
    """Two images with random boxes, box-shaped masks and classes (loce.testing's)."""
    return detection_batch(2, size, gts_per_image, num_classes, seed)


def build_models(config):
    """The LOCE model and a plain one with the same weights, both frozen the LOCE way."""
    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    loce = MODELS.build(cfg.model)  # PyTorch's default init: timing needs no trained weights
    plain_cfg = cfg.model.copy()
    head = plain_cfg.roi_head
    head.pop('indicator'), head.pop('mfs')
    head.type = 'StandardRoIHead'
    head.bbox_head.loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    plain = MODELS.build(plain_cfg)
    missing, unexpected = plain.load_state_dict(loce.state_dict(), strict=False)
    assert missing == [] and unexpected == ['roi_head.indicator.scores'], (missing, unexpected)
    runs = {}
    for name, model in (('plain', plain), ('LOCE', loce)):
        frozen = freeze_except(model)
        model.train()
        for module in frozen:
            module.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        runs[name] = (model, torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4))
    return runs


def fill_memory(model):
    """Full queues for the first FILLED_CLASSES classes, which get the lowest mean score so the
    sampler draws them (over 99% of the draws), as after the warm-up on real data. Returns the
    number of classes filled."""
    head = model.roi_head
    filled = min(FILLED_CLASSES, head.bbox_head.num_classes)
    feature_shape = (head.bbox_roi_extractor.out_channels, 7, 7)
    for label in range(filled):
        rows = head.memory.size
        head.memory.push(torch.randn((rows,) + feature_shape), torch.full((rows,), label),
                         torch.randn(rows, 4) * 0.1)
    head.indicator.scores[:filled] = 1e-4
    head.indicator.scores[filled:-1] = 0.5
    return filled


def iteration(model, optimizer, batch):
    start = time.perf_counter()
    data = model.data_preprocessor(batch, True)
    total, _ = model.parse_losses(model(**data, mode='loss'))
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=str(CONFIG),
                        help='LOCE config whose model is timed (e.g. a configs/smoke/ one)')
    parser.add_argument('--size', type=int, default=320, help='image side in pixels')
    parser.add_argument('--gts', type=int, default=8, help='GT instances per image')
    parser.add_argument('--repeats', type=int, default=5, help='timed iterations per variant')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations per variant')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs = build_models(args.config)
    loce_model = runs['LOCE'][0]
    batch = make_batch(args.size, args.gts, fill_memory(loce_model))
    rows = []
    spy = loce_model.roi_head.memory.sample

    def counting_sample(classes, per_class, generator=None):
        out = spy(classes, per_class, generator)
        rows.append(len(out[1]))
        return out

    loce_model.roi_head.memory.sample = counting_sample
    times = {name: [] for name in runs}
    for step in range(args.warmup + args.repeats):
        for name, (model, optimizer) in runs.items():
            elapsed = iteration(model, optimizer, batch)
            if step >= args.warmup:
                times[name].append(elapsed)

    plain, loce = statistics.median(times['plain']), statistics.median(times['LOCE'])
    head = loce_model.roi_head
    print(f'{Path(args.config).name}: {loce_model.backbone.depth}-layer ResNet, '
          f'{head.bbox_head.num_classes} classes, M={head.memory.size}; 2 images of {args.size} '
          f'px with {args.gts} GTs; CPU, {args.threads} thread(s); medians of {args.repeats} '
          'iterations')
    print(f'{"":24}{"plain":>10}{"LOCE":>10}{"ratio":>10}')
    print(f'{"iteration time (s)":24}{plain:10.3f}{loce:10.3f}{loce / plain:10.3f}')
    print(f'memory features appended per iteration: {statistics.median(rows):.0f} '
          f'(k x m = {head.sampled_classes * head.features_per_class})')
    print('\nfeature memory at LVIS v1 scale (1203 classes x 80 slots x 256x7x7):')
    for dtype in ('float32', 'float16'):
        nbytes = FeatureMemory.nbytes(1203, 80, (256, 7, 7), dtype)
        print(f'  {dtype}: {nbytes:,} bytes = {nbytes / 1e9:.2f} GB = {nbytes / 2**30:.2f} GiB')


if __name__ == '__main__':
    main()
