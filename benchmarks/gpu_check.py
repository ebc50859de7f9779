"""The GPU check that scripts/gpu_check.sh runs once mmcv's CUDA ops are built: one JSON summary.

On one device, against the CPU (benchmarks/README.md, "GPU check"):
- ops: mmcv's nms and roi_align (forward and backward) on the device against its CPU kernels;
- iteration: the full-size R50 LOCE fine-tune config (1203 classes, 512 RoIs per image, frozen
  representation) on a batch of two synthetic 800-px images, plain fine-tuning against LOCE, in
  iterations/s and peak device memory. Models, batch, memory fill and the iteration itself
  (preprocessing, loss forward, backward, SGD step) are benchmarks/bench_loce_iteration.py's,
  timed here with the device synchronised. LOCE runs twice: with the config's MFS memory (CPU,
  float32) and with the memory on the device in float16;
- mfs_memory: that LVIS-scale memory (1203 classes x 80 slots x 256x7x7), as allocated in each;
- evaluation: the same config pointed at a synthetic LVIS set (pipeline.data.synthetic, placed
  with pipeline.runconfig.relocate_data, num_classes set to its classes), evaluated once by
  mmengine's Runner through FastLVISMetric. Weights are untrained (no checkpoint, no download),
  so the APs are near zero: this checks the path, not accuracy.

    python benchmarks/gpu_check.py --device cuda --out gpu_check.json   # what the script runs
    python benchmarks/gpu_check.py --device cpu --tiny --threads 1       # the tests' dry run

The dry run uses the smoke config, small images and two iterations, and compares CPU against
CPU, which must come out exactly equal. The summary goes to stdout (and --out); logs to stderr.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_CONFIG = ROOT / 'configs/loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py'
TINY_RUN = 'loce_r50_v1'  # its config as the smoke scale shrinks it
# Per scale: config, timed batch (image side, GTs per image), iterations, op sizes, eval set.
# The eval set's images are 128 px; the full config's test pipeline scales them to 800 px.
SCALES = {
    'full': dict(config=FULL_CONFIG, size=800, gts=8, warmup=3, iterations=20,
                 boxes=2000, rois=256, feature=(2, 256, 64, 64)),
    'tiny': dict(config=TINY_RUN, size=128, gts=3, warmup=1, iterations=2,
                 boxes=200, rois=32, feature=(1, 16, 32, 32)),
}
EVAL_SET = dict(num_train=222, num_val=16, image_size=128, num_categories=16, val_min_images=1)
NMS_THRESHOLDS = (0.5, 0.7)  # mmdet's R-CNN and RPN thresholds
ROI_ALIGN = dict(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)


def _config(scale: dict):
    """The scale's LOCE config: the full one as written, or a smoke run's as the smoke shrinks it."""
    from mmengine.config import Config

    if scale['config'] == TINY_RUN:
        from pipeline import matrix as mx
        from pipeline import runconfig
        return runconfig.at_scale(mx.load(), 'smoke', TINY_RUN)
    return Config.fromfile(str(scale['config']))


def _config_name(scale: dict) -> str:
    if scale['config'] == TINY_RUN:
        return f'{TINY_RUN} at the smoke scale'
    return str(Path(scale['config']).relative_to(ROOT))


START = time.perf_counter()


def log(message):
    print(f'[gpu_check {time.perf_counter() - START:6.1f}s] {message}', file=sys.stderr, flush=True)


@contextmanager
def stdout_to_stderr():
    """Everything but the summary goes to stderr, also what mmengine's logger and C++ code
    write to stdout, so that stdout holds the one JSON summary."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def synchronize(device):
    if device.type == 'cuda':
        import torch
        torch.cuda.synchronize(device)


def gib(nbytes):
    return None if nbytes is None else round(nbytes / 2**30, 3)


def max_abs_diff(a, b):
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def pairwise_iou(boxes):
    """IoU of every pair, in float64 (mmcv's offset=0 convention)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = boxes[:, None, :2].maximum(boxes[None, :, :2])
    rb = boxes[:, None, 2:].minimum(boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area[:, None] + area[None, :] - inter)


def check_ops(device, boxes, rois, feature, seed=0):
    """mmcv's nms and roi_align on `device` against its CPU kernels, on seeded random input.

    nms must keep the same indices; `min_iou_margin` says how close any pair's IoU (float64)
    came to a threshold, since only a pair closer than float32 rounding could be decided
    differently. roi_align's backward sums with atomics on CUDA, so it is compared within
    tolerance and reported exactly."""
    import torch
    from mmcv.ops import nms, roi_align

    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(boxes, 2, generator=g) * 800
    box_t = torch.cat([xy, xy + torch.rand(boxes, 2, generator=g) * 200 + 4], dim=1)
    scores = torch.rand(boxes, generator=g)
    iou = pairwise_iou(box_t.double())
    iou.fill_diagonal_(-1)
    result = dict(nms={}, roi_align={})
    for thr in NMS_THRESHOLDS:
        _, keep_cpu = nms(box_t, scores, thr)
        _, keep_dev = nms(box_t.to(device), scores.to(device), thr)
        keep_dev = keep_dev.cpu()
        result['nms'][str(thr)] = dict(
            boxes=boxes, kept_cpu=len(keep_cpu), kept_device=len(keep_dev),
            equal=torch.equal(keep_cpu, keep_dev),
            min_iou_margin=float((iou[iou >= 0] - thr).abs().min()))

    n, c, h, w = feature
    feats = torch.randn(feature, generator=g)
    stride = 1 / ROI_ALIGN['spatial_scale']
    xy = torch.rand(rois, 2, generator=g) * torch.tensor([w, h]) * stride * 0.8
    wh = torch.rand(rois, 2, generator=g) * 120 + 2
    roi_t = torch.cat([torch.randint(0, n, (rois, 1), generator=g).float(), xy, xy + wh], dim=1)
    grad_out = torch.randn((rois, c) + ROI_ALIGN['output_size'], generator=g)
    outputs = {}
    for name, dev in (('cpu', torch.device('cpu')), ('device', device)):
        x = feats.to(dev).requires_grad_()
        out = roi_align(x, roi_t.to(dev), ROI_ALIGN['output_size'], ROI_ALIGN['spatial_scale'],
                        ROI_ALIGN['sampling_ratio'], 'avg', ROI_ALIGN['aligned'])
        out.backward(grad_out.to(dev))
        outputs[name] = (out.detach().cpu(), x.grad.cpu())
    (out_c, grad_c), (out_d, grad_d) = outputs['cpu'], outputs['device']
    result['roi_align'] = dict(
        rois=rois, feature=list(feature),
        **{k: v for k, v in ROI_ALIGN.items() if k != 'output_size'},
        forward_equal=torch.equal(out_c, out_d), forward_max_abs_diff=max_abs_diff(out_c, out_d),
        backward_equal=torch.equal(grad_c, grad_d),
        backward_max_abs_diff=max_abs_diff(grad_c, grad_d),
        close=torch.allclose(out_c, out_d, rtol=1e-5, atol=1e-5)
        and torch.allclose(grad_c, grad_d, rtol=1e-5, atol=1e-4))
    return result


def storage_bytes(memory):
    tensors = (memory.features, memory.targets, memory.labels)
    return sum(t.numel() * t.element_size() for t in tensors)


def time_variant(name, model, optimizer, batch, device, warmup, iterations, iteration):
    """Warm-up, then timed iterations of one model alone on the device; peak memory over the
    timed ones. For LOCE, also the memory rows that each iteration appended."""
    import torch

    rows = []
    memory = getattr(model.roi_head, 'memory', None)
    if memory is not None:
        sample = memory.sample

        def counting_sample(classes, per_class, generator=None):
            out = sample(classes, per_class, generator)
            rows.append(len(out[1]))
            return out

        memory.sample = counting_sample
    for _ in range(warmup):
        iteration(model, optimizer, batch)
    synchronize(device)
    rows.clear()
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        iteration(model, optimizer, batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    log(f'{name}: {1 / median:.2f} it/s (median of {iterations})')
    return dict(iterations=iterations, warmup=warmup, median_s=median,
                mean_s=statistics.fmean(times), it_per_s=1 / median,
                resident_gib=gib(resident) if cuda else None,
                peak_gib=gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
                memory_rows_per_iteration=statistics.median(rows) if rows else None)


def check_iterations(scale, device):
    """Plain, LOCE with the config's memory, LOCE with the memory on `device` in float16: the
    same weights and batch, one model at a time on the device."""
    import copy
    import gc

    import torch
    from bench_loce_iteration import (FILLED_CLASSES, build_models, fill_memory, iteration,
                                      make_batch)
    from loce.models.mfs import FeatureMemory

    runs = build_models(_config(scale))
    # The same LOCE model and optimizer, its memory (not allocated yet) on the device in float16.
    runs['LOCE-device-fp16'] = copy.deepcopy(runs['LOCE'])
    head = runs['LOCE-device-fp16'][0].roi_head
    head.memory = FeatureMemory(head.bbox_head.num_classes, size=head.memory.size,
                                device=device.type, dtype='float16')
    classes = head.bbox_head.num_classes
    info = dict(classes=classes, memory_size=head.memory.size,
                classes_filled=min(FILLED_CLASSES, classes), sampled_classes=head.sampled_classes,
                features_per_class=head.features_per_class)
    del head  # the models go one by one, their memories with them
    batch = make_batch(scale['size'], scale['gts'], info['classes_filled'])
    variants, memories = {}, {}
    for name in ('plain', 'LOCE', 'LOCE-device-fp16'):
        model, optimizer = runs.pop(name)
        model.to(device)
        if name != 'plain':
            before = torch.cuda.memory_allocated(device) if device.type == 'cuda' else None
            fill_memory(model)
            memory = model.roi_head.memory
            dtype = str(memory.dtype).replace('torch.', '')
            memories[name] = dict(
                device=str(memory.device), dtype=dtype, bytes=storage_bytes(memory),
                formula_bytes=FeatureMemory.nbytes(classes, memory.size,
                                                   tuple(memory.features.shape[2:]), dtype),
                device_allocated_bytes=None if before is None
                else torch.cuda.memory_allocated(device) - before)
            del memory
        variants[name] = time_variant(name, model, optimizer, batch, device, scale['warmup'],
                                      scale['iterations'], iteration)
        del model, optimizer
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    plain = variants['plain']['it_per_s']
    return dict(
        config=_config_name(scale), images=2, image_size=scale['size'],
        gts_per_image=scale['gts'], **info, variants=variants,
        loce_time_over_plain={k: plain / v['it_per_s']
                              for k, v in variants.items() if k != 'plain'},
    ), memories


def evaluate(scale, device, work_dir):
    """The config on a synthetic LVIS set, one Runner.test through FastLVISMetric."""
    from mmengine.runner import Runner

    from pipeline.data.synthetic import class_names, synthesize
    from pipeline.runconfig import relocate_data

    data = Path(work_dir) / 'data'
    start = time.perf_counter()
    summary = synthesize(data, seed=0, **EVAL_SET)
    synth_s = time.perf_counter() - start
    log(f"synthetic LVIS: {summary['val']['images']} val images in {synth_s:.1f}s")
    cfg = _config(scale)
    relocate_data(cfg, data / 'lvis_v1')
    classes = class_names(EVAL_SET['num_categories'])
    cfg.model.roi_head.bbox_head.num_classes = len(classes)
    cfg.model.roi_head.mask_head.num_classes = len(classes)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.metainfo = dict(classes=classes)
    cfg.work_dir = str(Path(work_dir) / 'runner')
    cfg.load_from = None
    cfg.log_level = 'WARNING'  # the metrics come back in the summary
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    metrics = runner.test()
    test_s = time.perf_counter() - start
    log(f'evaluation: {test_s:.1f}s')
    return dict(metric=cfg.test_evaluator.type, images=summary['val']['images'],
                classes=len(classes), image_size=EVAL_SET['image_size'],
                test_resize=next((list(t['scale']) for t in cfg.test_dataloader.dataset.pipeline
                                  if t['type'] == 'Resize'), None),
                device=str(next(runner.model.parameters()).device), synthesize_s=synth_s,
                test_s=test_s, metrics={k: float(v) for k, v in metrics.items()})


def ninja_profile(build_dir):
    """Compile steps of mmcv's build from ninja's log: count, summed and slowest seconds."""
    logs = sorted(Path(build_dir).glob('temp.*/.ninja_log')) if build_dir else []
    if not logs:
        return None
    steps = {}
    for line in logs[0].read_text().splitlines():
        parts = line.split('\t')
        if len(parts) >= 4 and not line.startswith('#'):
            steps[parts[3]] = (int(parts[1]) - int(parts[0])) / 1000
    slowest = sorted(steps.items(), key=lambda kv: -kv[1])[:5]
    return dict(steps=len(steps), summed_s=round(sum(steps.values()), 1),
                slowest=[[Path(k).name, round(v, 1)] for k, v in slowest])


def environment(device, build_info):
    import mmcv
    import mmdet
    import mmengine
    import numpy
    import torch
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version

    info = dict(python=platform.python_version(), torch=torch.__version__,
                torch_cuda=torch.version.cuda, numpy=numpy.__version__, mmcv=mmcv.__version__,
                mmcv_compiled_cuda=get_compiling_cuda_version(),
                mmcv_compiler=get_compiler_version(), mmengine=mmengine.__version__,
                mmdet=mmdet.__version__, cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                device=str(device))
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability='%d.%d' % (props.major, props.minor),
                    gpu_memory_gib=gib(props.total_memory),
                    multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
        try:
            info['driver'] = subprocess.run(
                ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            info['driver'] = None
    build = None
    if build_info and Path(build_info).is_file():
        build = json.loads(Path(build_info).read_text())
        build['ninja'] = ninja_profile(build.get('build_dir'))
    return info, build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', help="'cuda' (the check) or 'cpu' (dry run)")
    parser.add_argument('--tiny', action='store_true',
                        help='smoke config, small images, two iterations (the dry run)')
    parser.add_argument('--work-dir', default=str(ROOT / 'work/gpu_check_state/run'),
                        help='scratch folder inside the checkout (synthetic data, runner logs)')
    parser.add_argument('--build-info', help="scripts/gpu_check.sh's record of the mmcv build")
    parser.add_argument('--iterations', type=int, help='timed iterations per variant '
                        '(default: 20, tiny: 2)')
    parser.add_argument('--warmup', type=int, help='untimed iterations per variant (3, tiny: 1)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--out', help='also write the JSON summary here')
    args = parser.parse_args(argv)
    with stdout_to_stderr():
        summary = run_checks(args)
    text = json.dumps(summary, indent=1)
    if args.out:
        tmp = Path(f'{args.out}.tmp')
        tmp.write_text(text + '\n')
        os.replace(tmp, args.out)
    print(text)
    return summary


def run_checks(args):
    # mmengine's Runner takes a GPU whenever it sees one: hide them for a CPU run, before torch
    # starts (which is why torch and the mm* packages are imported inside the functions).
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no GPU; the dry run is --device cpu --tiny')
    scale = dict(SCALES['tiny' if args.tiny else 'full'])
    scale.update({k: getattr(args, k) for k in ('iterations', 'warmup')
                  if getattr(args, k) is not None})
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    # The checkout's pipeline/ (the wheel ships loce/ alone) and bench_loce_iteration.
    sys.path[:0] = [str(ROOT), str(ROOT / 'benchmarks')]

    env, build = environment(device, args.build_info)
    log(f"{env.get('gpu', 'CPU')}, torch {env['torch']}, mmcv {env['mmcv']} "
        f"(CUDA {env['mmcv_compiled_cuda']})")
    ops = check_ops(device, scale['boxes'], scale['rois'], scale['feature'])
    roi = ops['roi_align']
    log(f"ops: nms equal {[v['equal'] for v in ops['nms'].values()]}, roi_align max |diff| "
        f"{roi['forward_max_abs_diff']:.2e} / {roi['backward_max_abs_diff']:.2e}")
    iterations, memories = check_iterations(scale, device)
    mfs = dict(config=memories['LOCE'], device_float16=memories['LOCE-device-fp16'],
               config_over_device_float16=memories['LOCE']['bytes']
               / memories['LOCE-device-fp16']['bytes'])
    evaluation = evaluate(scale, device, work_dir)
    loce_rows = iterations['sampled_classes'] * iterations['features_per_class']
    checks = dict(
        nms_equal=all(v['equal'] for v in ops['nms'].values()),
        roi_align_close=ops['roi_align']['close'],
        loce_appends_memory=all(iterations['variants'][k]['memory_rows_per_iteration'] == loce_rows
                                for k in ('LOCE', 'LOCE-device-fp16')),
        memory_bytes_as_formula=all(m['bytes'] == m['formula_bytes'] for m in memories.values()),
        evaluation_ran=evaluation['images'] > 0 and bool(evaluation['metrics']))
    summary = dict(status='ok' if all(checks.values()) else 'mismatch', scale='tiny' if args.tiny
                   else 'full', checks=checks, environment=env, build=build, ops=ops,
                   iteration=iterations, mfs_memory=mfs, evaluation=evaluation,
                   wall_s=round(time.perf_counter() - START, 1))
    return summary


if __name__ == '__main__':
    main()
