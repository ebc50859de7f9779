"""What every result carries, and what a trained run is: its identity.

A run's identity is the hash of its resolved config, of the code its stage runs (and the pinned
packages' versions) and of its data. A work dir is reused or resumed only under the identity it
was made with, and every result names the identity it came from, so no number can be published
under a config, code or data it did not come from.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import matrix as mx

ROOT = mx.ROOT
PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmdet', 'numpy', 'faster-coco-eval', 'loce-repro')
# The code each stage runs. Snakemake takes the fingerprint files as inputs and dvc.yaml lists
# the same paths as deps (tests/test_frontends.py checks that the two agree).
STAGE_CODE = {
    # Training runs the model and hooks of loce/, not its evaluation (no validation in training).
    'train': ('loce/__init__.py', 'loce/models', 'loce/engine', 'pipeline/train.py',
              'pipeline/train_hooks.py', 'pipeline/distributed.py', 'pipeline/determinism.py'),
    'evaluate': ('loce', 'pipeline/evaluate.py', 'pipeline/determinism.py'),
    'analyse': ('loce', 'pipeline/analyse.py', 'pipeline/determinism.py'),
}


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout, or (None, None) outside git.

    Dirty means the code differs from the commit: results/, which the pipeline itself
    rewrites, does not count.
    """
    def git(*args):
        return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    try:
        commit = git('rev-parse', 'HEAD').strip()
        dirty = bool(git('status', '--porcelain', '--untracked-files=no', '--', '.',
                         ':(exclude)results').strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _files(paths) -> list[Path]:
    files = []
    for name in paths:
        path = ROOT / name
        files += sorted(path.rglob('*.py')) if path.is_dir() else [path]
    return files


def code_sha256(stage: str) -> str:
    """Hash of the stage's source files by content alone (the sorted hashes of their bytes) and
    of the package versions: a file moved or renamed with the same bytes keeps the fingerprint,
    so code can move without making every published result stale; any edit changes it."""
    files = sorted(hashlib.sha256(path.read_bytes()).hexdigest()
                   for path in _files(STAGE_CODE[stage]))
    return sha256_text(json.dumps(dict(packages=package_versions(), files=files), sort_keys=True))


def data_sha256(matrix: dict, scale: str, dataset: str) -> str:
    """Hash of the dataset's annotation files (images follow from them: generated from the same
    seed and settings, or fetched against pinned checksums)."""
    digest = hashlib.sha256()
    for path in mx.annotation_files(matrix, scale, dataset):
        if not path.is_file():
            raise SystemExit(f'{path}: missing; run `python -m pipeline data --scale {scale}` first')
        digest.update(mx.rel(path).encode() + b'\0')
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
    return digest.hexdigest()


def identity(matrix: dict, scale: str, run: str, config_sha256: str) -> dict:
    """What a trained work dir stands for: resolved config, training code, data."""
    dataset = mx.run_spec(matrix, run)['dataset']
    return dict(config_sha256=config_sha256, code_sha256=code_sha256('train'),
                data_sha256=data_sha256(matrix, scale, dataset))


def write_fingerprint(path: Path, value: str) -> Path:
    """Write `value` to `path` only when it differs, so the file's mtime moves exactly when the
    thing it stands for changes (Snakemake reruns on mtime)."""
    from . import atomic
    if not (path.is_file() and path.read_text().strip() == value):
        atomic.write_text(path, value + '\n')
    return path


def device() -> str:
    import torch
    if torch.cuda.is_available():
        return f'{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}'
    return f'cpu ({torch.get_num_threads()} threads)'


def record(*, config: Path, config_sha256: str, seed: int, **extra) -> dict:
    from . import determinism

    commit, dirty = git_state()
    return dict(git_commit=commit, git_dirty=dirty, packages=package_versions(),
                config=mx.rel(config), config_sha256=config_sha256, seed=seed, device=device(),
                cpu=determinism.state(),
                created=datetime.now(timezone.utc).isoformat(timespec='seconds'), **extra)
