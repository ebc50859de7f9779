"""The mmengine config of one run and seed, as the matrix defines it.

Shared by train, evaluate and analyse so that all three see the same config, and so the
config hash in every result names exactly what ran.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from . import matrix as mx


def build(matrix: dict, profile: str, run: str, seed: int):
    from mmengine.config import Config

    spec = mx.run_spec(matrix, run)
    path = mx.config_path(matrix, profile, spec['config'])
    if not path.is_file():
        raise SystemExit(f'{path}: config of run {run!r} ({profile} profile) does not exist; '
                         f'add it or fix `config:` of {run} in {mx.MATRIX_FILE}')
    root = mx.data_root(matrix, profile, spec['dataset'])
    if not root.is_dir():
        how = 'python -m pipeline synthesize' if mx.profile(matrix, profile)['data'] == 'synthesize' \
            else 'python -m pipeline fetch'
        raise SystemExit(f'{root}: data of run {run!r} is missing; run `{how} --profile {profile}` first')
    cfg = Config.fromfile(str(path))
    relocate_data(cfg, root)
    cfg.merge_from_dict(spec['options'])
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = str(mx.work_dir(profile, run, seed))
    return cfg, path


def relocate_data(cfg, root: Path) -> None:
    """Point every path under the config's `data_root` at `root` (datasets, evaluator files)."""
    old = cfg.get('data_root')
    if not old:
        raise SystemExit(f'{cfg.filename}: no top-level data_root; the pipeline relocates data '
                         'through it (MMDetection base configs define one)')
    new = str(root).rstrip('/') + '/'
    old = old.rstrip('/') + '/'

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                node[key] = walk(value)
        elif isinstance(node, list):
            return [walk(v) for v in node]
        elif isinstance(node, tuple):
            return tuple(walk(v) for v in node)
        elif isinstance(node, str) and node.startswith(old):
            return new + node[len(old):]
        return node

    for key in list(cfg.keys()):
        cfg[key] = walk(cfg[key])
    cfg.data_root = new


def dump_text(cfg) -> str:
    """The resolved config as text: what the hash in the provenance is taken over."""
    return cfg.pretty_text


@contextmanager
def own_checkpoints():
    """Allow torch.load to unpickle mmengine's checkpoint extras (message hub, history).

    torch >= 2.6 loads with weights_only=True, which rejects them. Only used around loads of
    checkpoints this pipeline wrote under work/; published weights stay weights_only.
    """
    key = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
    old = os.environ.get(key)
    os.environ[key] = '1'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def require_own_checkpoint(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f'{path}: {what} does not exist; train it first '
                         f'(`python -m pipeline train ...` or snakemake)')
    if not path.resolve().is_relative_to((mx.ROOT / 'work').resolve()):
        raise SystemExit(f'{path}: refusing to unpickle a checkpoint outside work/')
    return path
