"""A run is its resolved config: one file per run and seed that every stage reads.

`resolve` builds it from the run's config file, the data relocation, the scale's shrink
(pipeline/shrink.py), the matrix `options`, the seed, the pretrain run it starts from and any
extra --cfg-options; `write` puts it at
work/<scale>/configs/<run>/seed<k>.py, touching the file only when its hash changes, so front
ends that rerun on file changes (Snakemake by mtime, DVC by content) rerun exactly the runs whose
config changed. Paths in it are repo-relative and the hash is taken over its canonical JSON form,
so two checkouts in different folders give the same hash. train, evaluate and analyse all load
the written file, so overrides given to train reach evaluation too.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import re
import reprlib
from pathlib import Path

from . import atomic, shrink
from . import matrix as mx
from .provenance import sha256_text

HEADER = re.compile(r'^# config_sha256: ([0-9a-f]{64})$', re.M)
NEW_KEY = '+'  # an option key written '+a.b' adds a key on purpose; others must exist


@functools.lru_cache(maxsize=None)
def _metafile_index(package_path: str) -> dict:
    """mmengine's index of an installed package's model metafiles, read once per process."""
    from mmengine.fileio import load
    index = {}
    mim = Path(package_path) / '.mim'
    for meta_path in load(str(mim / 'model-index.yml'))['Import']:
        for model in load(str(mim / meta_path))['Models']:
            if 'Config' in model:
                index.setdefault(model['Config'].partition('/')[-1], model)
    return index


def _cached_cfg_metainfo(package_path: str, cfg_path: str) -> dict:
    """Same result as mmengine's _get_cfg_metainfo. That one reads all of mmdet's ~100
    metafiles for every `mmdet::` base reference (1.5 s each, most of the time it takes to
    resolve a run's config); the index does not change within a process."""
    index = _metafile_index(package_path)
    if cfg_path not in index:
        raise ValueError(f'Expected configs: {index.keys()}, but got {cfg_path}')
    return index[cfg_path]


@functools.lru_cache(maxsize=None)
def _parsed(path: Path, mtime_ns: int):
    """A config file as mmengine parses it (runs sharing a file parse it once per process).
    Printed unformatted (see `_unformatted`)."""
    import mmengine.config.utils
    from mmengine.config import Config
    mmengine.config.utils._get_cfg_metainfo = _cached_cfg_metainfo
    return _unformatted(Config.fromfile(str(path), import_custom_modules=False))


def _unformatted(cfg):
    """The config printed (pretty_text: the resolved file, the Runner's log and dump) without
    yapf, which took about 1 s a config: 80 % of resolving the full scale's 108 configs when
    Snakemake parses, and again in each stage's Runner. The dict, hence the hash, is the same.
    (mmengine 0.10.7's Config.fromfile drops its own `format_python_code=False` for plain
    configs, so the flag is set as mmengine sets it.)"""
    object.__setattr__(cfg, '_format_python_code', False)
    return cfg


def at_scale(matrix: dict, scale: str, run: str):
    """The run's config file as it runs at `scale`: its data relocated there and shrunk by the
    scale's shrink file (what `resolve` starts from; tools and tests use it directly)."""
    spec = mx.run_spec(matrix, run, scale)
    path = mx.config_path(matrix, scale, spec['config'])
    if not path.is_file():
        raise SystemExit(f'{path}: config of run {run!r} ({scale} scale) does not exist; '
                         f'add it or fix `config:` of {run} in {mx.MATRIX_FILE}')
    cfg = copy.deepcopy(_parsed(path, path.stat().st_mtime_ns))
    relocate_data(cfg, mx.data_root(matrix, scale, spec['dataset']))
    if (shrink_file := mx.shrink_path(matrix, scale)) is not None:
        shrink.apply(cfg, shrink.load(shrink_file), f'{mx.rel(shrink_file)} on {mx.rel(path)}')
    return cfg


def resolve(matrix: dict, scale: str, run: str, seed: int, cfg_options: dict | None = None):
    """The run's mmengine Config, fully resolved (nothing is written)."""
    spec = mx.run_spec(matrix, run, scale)
    cfg = at_scale(matrix, scale, run)
    merge_checked(cfg, spec['options'], f'{mx.rel(mx.MATRIX_FILE)}: options of run {run!r}')
    if spec['pretrain'] and 'load_from' in (cfg_options or {}):
        raise SystemExit(_load_from_refused(matrix, scale, run, seed))
    merge_checked(cfg, cfg_options or {}, '--cfg-options')
    if (length := mx.scale(matrix, scale).get('length')) is not None:
        shorten(cfg, length, scale)
    cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
    cfg.work_dir = mx.rel(mx.work_dir(scale, run, seed))
    if spec['pretrain']:
        parent_seed = mx.pretrain_seed(matrix, scale, seed)
        cfg.load_from = mx.rel(mx.checkpoint(scale, spec['pretrain'], parent_seed))
        cfg.pretrain_config_sha256 = config_sha256(
            resolve(matrix, scale, spec['pretrain'], parent_seed))
    return cfg


def _load_from_refused(matrix: dict, scale: str, run: str, seed: int) -> str:
    """Refused rather than honoured: a fine-tune is tied to its pretrain run's config (train
    checks the parent's identity), so weights from elsewhere would break that chain."""
    parent = mx.run_spec(matrix, run)['pretrain']
    weights = mx.checkpoint(scale, parent, mx.pretrain_seed(matrix, scale, seed))
    return (f'--cfg-options load_from: {run!r} is a fine-tune run; the pipeline sets its '
            f'load_from to the weights of pretrain run {parent!r} ({mx.rel(weights)}). To '
            'start from another checkpoint, add a pretrain run that makes it and name that run '
            f'in `pretrain:` of a fine-tune run in {mx.rel(mx.MATRIX_FILE)}')


def config_sha256(cfg) -> str:
    """Hash of the config's canonical JSON form (key order and formatting do not matter)."""
    return sha256_text(json.dumps(cfg.to_dict(), sort_keys=True, default=repr,
                                  separators=(',', ':')))


def write(cfg, scale: str, run: str, seed: int) -> tuple[Path, str]:
    """Write the resolved config unless the file already holds this hash; (path, hash)."""
    sha = config_sha256(cfg)
    path = mx.resolved_config(scale, run, seed)
    if written_sha256(path) != sha:
        atomic.write_text(path, f'# Resolved config of run {run!r}, seed {seed}, scale '
                                f'{scale!r}: written by pipeline/runconfig.py, read by every stage.\n'
                                f'# config_sha256: {sha}\n{cfg.pretty_text}')
    return path, sha


def resolve_and_write(matrix: dict, scale: str, run: str, seed: int,
                      cfg_options: dict | None = None) -> tuple[Path, str]:
    return write(resolve(matrix, scale, run, seed, cfg_options), scale, run, seed)


def written_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    match = HEADER.search(path.read_text())
    return match.group(1) if match else None


def load(scale: str, run: str, seed: int):
    """(Config, hash) of the run's resolved config, as train wrote it; refuses a file whose
    content no longer matches its hash (edited by hand)."""
    from mmengine.config import Config

    path = mx.resolved_config(scale, run, seed)
    if not path.is_file():
        raise SystemExit(f'{path}: no resolved config for run {run!r} seed {seed}; train it first '
                         f'(`python -m pipeline train --scale {scale} --run {run} --seed {seed}`)')
    cfg = _unformatted(Config.fromfile(str(path)))
    sha = written_sha256(path)
    if sha is None or config_sha256(cfg) != sha:
        raise SystemExit(f'{path}: its content does not match its config_sha256 header (edited '
                         f'by hand?); delete it and run `python -m pipeline train --scale {scale} '
                         f'--run {run} --seed {seed}` to resolve it again')
    return cfg, sha


def key_paths(node, prefix: str = '') -> list[str]:
    """Every dotted key path of a config (list items by index, as --cfg-options writes them)."""
    items = (node.items() if isinstance(node, dict)
             else enumerate(node) if isinstance(node, (list, tuple)) else ())
    paths = []
    for key, value in items:
        path = f'{prefix}{key}'
        paths += [path, *key_paths(value, path + '.')]
    return paths


def _kind(value) -> str | None:
    """What an override of a key holding `value` must be (None: anything goes)."""
    for kind, types in (('bool', bool), ('int', int), ('float', float), ('str', str),
                        ('list', (list, tuple)), ('dict', dict)):
        if isinstance(value, types):
            return kind
    return None


def _value_at(tree, key: str):
    for part in key.split('.'):
        tree = tree[int(part)] if isinstance(tree, (list, tuple)) else tree[part]
    return tree


def _check_type(tree: dict, key: str, value, where: str) -> None:
    """An override must have the type of the value it replaces (an int is a float too; None
    clears any key): 'lr=abc' would otherwise pass and fail a thousand log lines into
    training."""
    current = _value_at(tree, key)
    expected, given = _kind(current), _kind(value)
    if value is None or expected in (None, given) or (expected, given) == ('float', 'int'):
        return
    raise SystemExit(f'{where}: {key}={value!r} is of type {given or type(value).__name__}; '
                     f'the config has {reprlib.repr(current)} there, of type {expected}, and an '
                     'override must have its type')


def merge_checked(cfg, options: dict, where: str) -> None:
    """Merge overrides whose keys all exist in `cfg` (a typo would otherwise be kept silently
    and change nothing) with the type of the value they replace; a key written '+a.b' is new on
    purpose and merged as 'a.b'."""
    if not options:
        return
    tree = cfg.to_dict()
    known = set(key_paths(tree))
    merged = {}
    for key, value in options.items():
        if key.startswith(NEW_KEY):
            merged[key[len(NEW_KEY):]] = value
            continue
        if key not in known:
            near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f'did you mean {", ".join(near)}? ' if near else ''
            raise SystemExit(f'{where}: key {key!r} is not in the config; {hint}write '
                             f"'{NEW_KEY}{key}' to add it as a new key")
        _check_type(tree, key, value, where)
        merged[key] = value
    cfg.merge_from_dict(merged)


def shorten(cfg, length: dict, scale: str) -> None:
    """A scale's `length` (a rehearsal): the train loop's epochs or iterations and the MFS
    warm-up's images per process, and a top-level `shortened` that says so in the config."""
    loop = cfg.train_cfg.get('type', '')
    if 'Epoch' in loop:
        cfg.train_cfg.max_epochs = length['epochs']
    elif 'Iter' in loop:
        cfg.train_cfg.max_iters = length['iterations']
    else:
        raise SystemExit(f'{cfg.filename}: train_cfg type {loop!r}: the {scale} scale\'s `length` '
                         'knows epoch- and iteration-based loops only')
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'MemoryWarmupHook':
            hook['max_images'] = length['warmup_images']
    cfg.shortened = dict(length, why=f'scale {scale!r} rehearses code paths; not a result')


def relocate_data(cfg, root: Path) -> None:
    """Point every path under the config's `data_root` at `root` (datasets, evaluator files),
    written relative to the checkout."""
    old = cfg.get('data_root')
    if not old:
        raise SystemExit(f'{cfg.filename}: no top-level data_root; the pipeline relocates data '
                         'through it (MMDetection base configs define one)')
    new = mx.rel(root).rstrip('/') + '/'
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


def require_own_checkpoint(path: Path, what: str) -> Path:
    """A checkpoint this pipeline wrote under work/ (the only ones it unpickles); a missing one
    names the command that trains it, read off its path (work/<scale>/<run>/seed<k>/final.pth:
    the callers pass only the path)."""
    path = Path(path)
    work = (mx.ROOT / 'work').resolve()
    if not path.is_file():
        parts = path.resolve().relative_to(work).parts \
            if path.resolve().is_relative_to(work) else ()
        if len(parts) == 4 and parts[2].startswith('seed'):
            scale, run, seed = parts[0], parts[1], parts[2].removeprefix('seed')
            raise SystemExit(f'{path}: {what} does not exist; train it first (`python -m '
                             f'pipeline train --scale {scale} --run {run} --seed {seed}`)')
        raise SystemExit(f'{path}: {what} does not exist; train it first')
    if not path.resolve().is_relative_to(work):
        raise SystemExit(f'{path}: refusing to unpickle a checkpoint outside work/')
    return path
