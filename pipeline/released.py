"""The authors' released checkpoints (fcjian/LOCE, MMDetection 2.8) evaluated in this harness.

Why: evaluating the published weights here is the cheapest check of the reproduction (one
GPU-hour instead of GPU-days) and separates "our training differs" from "our model or
evaluation differs". The weights are converted to the model of the matching config here and
evaluated through the config's FastLVISMetric, as every run is.

The 2.x file is what mmcv 1.x `save_checkpoint` writes: {'meta': {CLASSES, config, mmcv_version,
mmdet_version, epoch, iter, ...}, 'state_dict': ..., 'optimizer': SGD state}. Read at the source
(fcjian/LOCE at 0a0194d: mmdet/models/backbones/resnet.py, utils/res_layer.py, necks/fpn.py,
dense_heads/rpn_head.py, roi_heads/bbox_heads/{convfc_bbox_head,loce_convfc_bbox_head}.py,
roi_heads/mask_heads/fcn_norm_mask_head.py, roi_heads/loce_roi_head.py, losses/
equilibrium_loss.py, utils/mfs.py) and against this repo's models built from their configs:
- every 2.x tensor keeps its name in 3.x (backbone.*, neck.{lateral,fpn}_convs.i.conv.*,
  rpn_head.rpn_{conv,cls,reg}.*, roi_head.bbox_head.{shared_fcs.0,shared_fcs.1,fc_cls,fc_reg}.*,
  roi_head.mask_head.{convs.i.conv,upsample,conv_logits}.*); shapes agree too (fc_cls C+1 rows,
  background last; fc_reg 4C). No rename is needed.
- the authors' FCNNormMaskHead keeps the plain conv_logits weight and normalises in forward, as
  mmdet's NormedConv2d(tempearture=20) does: same tensors, no conversion. Their F.normalize
  clamps the norm at 1e-12 where NormedConv2d adds 1e-6, a relative difference near 1e-6.
- LOCE's own state (mean score, MFS memory, Equilibrium Loss) is not in their checkpoints: plain
  attributes, not parameters or buffers. This repo's LOCE head keeps its mean score as a buffer,
  roi_head.indicator.scores; it is set to its initial value (prediction never reads it).
- meta is checked (CLASSES, by name and order, against mmdet's LVIS METAINFO) and dropped with
  the optimizer state; any other key, missing or extra, is refused.
"""
from __future__ import annotations

import copy
import pickle
import time
import zipfile
from pathlib import Path

from . import matrix as mx
from . import provenance, records, runconfig
from .data.fetch import file_digests

# 3.x tensors with no 2.x counterpart, kept at the freshly built model's value, and why.
NO_COUNTERPART = {
    'roi_head.indicator.scores': "LOCE's mean score: the authors never saved it (a plain "
                                 'attribute, rebuilt at 0.01 by every run); unused at prediction',
}
# mmdet 2.x's LVIS class tuples misspell one name that mmdet 3.x corrects (index 654 of v1,
# 668 of v0.5); checkpoints carry the 2.x spelling in meta.CLASSES.
MMDET2_SPELLING = {'speaker_(stero_equipment)': 'speaker_(stereo_equipment)'}
TOP_LEVEL = ('state_dict', 'meta', 'optimizer')  # what mmcv 1.x save_checkpoint writes
DATASET_TYPES = {'LVISV1Dataset', 'LVISV05Dataset', 'LVISDataset'}


def refuse(path, reason: str):
    raise SystemExit(f'{path}: refused: {reason}')


def _check_container(path: Path) -> None:
    """Tell a damaged or wrong file apart before unpickling, so the message says which."""
    if not path.is_file():
        refuse(path, 'no such file; download it (docs/released-models.md)')
    with open(path, 'rb') as f:
        head = f.read(64)
    if head.lstrip().lower().startswith((b'<!doctype html', b'<html')):
        refuse(path, "an HTML page, not a checkpoint (Google Drive's download warning?); "
                     'download the file itself')
    if head[:4] == b'PK\x03\x04':
        if not zipfile.is_zipfile(path):
            refuse(path, 'truncated or corrupted: the zip archive has no end record '
                         '(incomplete download?)')
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            refuse(path, f'corrupted zip archive ({err})')
        if bad:
            refuse(path, f'corrupted: member {bad} fails its CRC check')
    elif not head.startswith(b'\x80'):
        refuse(path, 'not a PyTorch checkpoint (neither a zip archive nor a legacy pickle)')


def read_checkpoint(path) -> dict:
    """The file as plain data: torch.load with weights_only=True only, never unpickling code."""
    import torch

    path = Path(path)
    _check_container(path)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported global' in str(err):
            refuse(path, 'holds a pickled Python object that weights_only loading refuses '
                         f'({str(err).split("Unsupported global:")[-1].strip()[:120]}); '
                         'only tensors and plain data are loaded from a downloaded file')
        refuse(path, f'corrupted or truncated ({str(err).splitlines()[0][:160]})')
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        refuse(path, f'corrupted or truncated ({type(err).__name__}: '
                     f'{str(err).splitlines()[0][:160]})')
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('state_dict'), dict):
        refuse(path, 'no state_dict: not an MMDetection checkpoint')
    extra = sorted(set(ckpt) - set(TOP_LEVEL))
    if extra:
        refuse(path, f'unexpected top-level keys {extra} (mmcv 1.x writes {list(TOP_LEVEL)})')
    return ckpt


def check_classes(path, meta, state: dict, names: list[str], dataset: str) -> None:
    """Class count from the classifier's shape, names and order from meta.CLASSES when there."""
    fc_cls = state.get('roi_head.bbox_head.fc_cls.weight')
    if fc_cls is not None and fc_cls.shape[0] - 1 != len(names):
        refuse(path, f'wrong class count: its classifier has {fc_cls.shape[0] - 1} classes, '
                     f'{dataset} has {len(names)}; is it the model of another dataset?')
    classes = (meta or {}).get('CLASSES')
    if classes is None:
        return
    classes = [MMDET2_SPELLING.get(c, c) for c in classes]
    if len(classes) != len(names):
        refuse(path, f'wrong class count: meta.CLASSES has {len(classes)} classes, '
                     f'{dataset} has {len(names)}')
    for i, (have, want) in enumerate(zip(classes, names)):
        if have != want:
            refuse(path, f'class {i} is {have!r} in meta.CLASSES, {want!r} in {dataset}: '
                         'another vocabulary or class order')


def convert(path, state: dict, model_state: dict) -> dict:
    """The 2.x state dict as the 3.x model's: same names (module docstring), the tensors with
    no counterpart filled from the model, every key and shape accounted for."""
    out = dict(state)
    for key in NO_COUNTERPART:
        if key in model_state and key not in out:
            out[key] = model_state[key].detach().clone()
    missing = sorted(set(model_state) - set(out))
    unexpected = sorted(set(out) - set(model_state))
    if missing or unexpected:
        def some(keys):
            return ', '.join(keys[:5]) + (f' (+{len(keys) - 5} more)' if len(keys) > 5 else '')
        refuse(path, 'keys do not match the model after conversion: '
               + '; '.join(f'{what} {len(keys)}: {some(keys)}' for what, keys in
                           (('missing', missing), ('unexpected', unexpected)) if keys))
    for key, value in out.items():
        if tuple(value.shape) != tuple(model_state[key].shape):
            refuse(path, f'{key} has shape {tuple(value.shape)}, the model '
                         f'{tuple(model_state[key].shape)}')
    return out


def load_released(model, path, names: list[str], dataset: str) -> dict:
    """Convert the file into `model` (strict); a summary of its meta for provenance."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get('meta') or {}
    check_classes(path, meta, ckpt['state_dict'], names, dataset)
    model.load_state_dict(convert(path, ckpt['state_dict'], model.state_dict()), strict=True)
    summary = {k: meta[k] for k in ('mmdet_version', 'mmcv_version', 'epoch', 'iter', 'time',
                                    'exp_name') if isinstance(meta.get(k), (str, int, float))}
    if isinstance(meta.get('config'), str):
        summary['config_sha256'] = provenance.sha256_text(meta['config'])
    summary['dropped'] = sorted(k for k in ckpt if k != 'state_dict')
    return summary


def entry(matrix: dict, name: str) -> dict:
    released = matrix.get('released', {})
    if name not in released:
        raise SystemExit(f'unknown released model {name!r}; {mx.MATRIX_FILE.name} `released` '
                         f'has: {", ".join(released)}')
    spec = released[name]
    if spec['dataset'] not in matrix['datasets']:
        raise SystemExit(f'{mx.MATRIX_FILE}: released/{name}: unknown dataset {spec["dataset"]!r}')
    return spec


def metrics_path(scale: str, name: str, root: Path | None = None) -> Path:
    """Beside the runs' metrics, not among them: a released model is no run of the matrix."""
    return (root or mx.results_dir(scale)) / 'released' / f'{name}.json'


def present(matrix: dict, scale: str) -> list[str]:
    """The released models the user has downloaded to their place (evaluated at full only)."""
    if scale != 'full':
        return []
    return [name for name, spec in matrix.get('released', {}).items()
            if (mx.ROOT / spec['file']).is_file()]


def resolve(matrix: dict, scale: str, name: str):
    """The released model's config as a run's is resolved: data relocated, nothing loaded."""
    spec = entry(matrix, name)
    path = mx.config_path(matrix, scale, spec['config'])
    if not path.is_file():
        raise SystemExit(f'{path}: config of released model {name!r} does not exist; fix '
                         f'`config:` of released/{name} in {mx.MATRIX_FILE}')
    cfg = copy.deepcopy(runconfig._parsed(path, path.stat().st_mtime_ns))
    runconfig.relocate_data(cfg, mx.data_root(matrix, scale, spec['dataset']))
    cfg.randomness = dict(cfg.get('randomness', {}), seed=0)
    cfg.work_dir = mx.rel(mx.ROOT / 'work' / scale / 'released' / name)
    cfg.load_from, cfg.resume = None, False
    return cfg, path


def class_names(cfg) -> tuple[list[str], str]:
    dataset = cfg.test_dataloader.dataset.type
    if dataset not in DATASET_TYPES:
        raise SystemExit(f'{cfg.filename}: test dataset {dataset!r} is not an LVIS dataset')
    from mmdet.registry import DATASETS
    return list(DATASETS.get(dataset).METAINFO['classes']), dataset


def evaluate(scale: str, name: str, checkpoint=None) -> dict:
    """Convert, load strictly, evaluate with the config's test evaluator, write the record."""
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from loce.evaluation import AP_KEYS

    if scale != 'full':
        raise SystemExit(f'--released: the authors\' models are LVIS models; use --scale full '
                         f'(got {scale!r})')
    matrix = mx.load()
    spec = entry(matrix, name)
    path = Path(checkpoint) if checkpoint else mx.ROOT / spec['file']
    _check_container(path)
    sha = file_digests(path)[0]
    if spec.get('sha256') and sha != spec['sha256']:
        refuse(path, f'checksum mismatch: sha256 {sha}, experiments.yaml released/{name} '
                     f'expects {spec["sha256"]}; download it again')
    cfg, config_file = resolve(matrix, scale, name)
    register_all_modules()
    names, dataset = class_names(cfg)
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    meta = load_released(getattr(runner.model, 'module', runner.model), path, names, dataset)
    raw = runner.test()
    wall = time.perf_counter() - start
    checksum = ('matches experiments.yaml' if spec.get('sha256') else
                'not checked: experiments.yaml has no sha256 for this file yet')
    result = records.metrics(
        run=name, seed=None, scale=scale, dataset=spec['dataset'], raw=raw, keys=AP_KEYS,
        provenance=provenance.record(
            config=config_file, config_sha256=runconfig.config_sha256(cfg), seed=None,
            released=name, checkpoint=mx.rel(path), checkpoint_sha256=sha, checksum=checksum,
            checkpoint_meta=meta,
            converter=dict(module='pipeline/released.py',
                           sha256=file_digests(Path(__file__))[0]),
            eval_code_sha256=provenance.code_sha256('evaluate'), eval_wall_s=round(wall, 2)))
    out = records.write(metrics_path(scale, name), result)
    print(f'[released] {name}: box AP {result["bbox"]["AP"]}, mask AP {result["segm"]["AP"]} '
          f'-> {mx.rel(out)}; checkpoint sha256 {sha} ({checksum})')
    return result
