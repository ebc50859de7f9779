"""What every result carries: commit, package versions, config hash, seed, device, time."""
from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .matrix import ROOT

PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmdet', 'numpy', 'faster-coco-eval', 'loce-repro')


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


def device() -> str:
    import torch
    if torch.cuda.is_available():
        return f'{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}'
    return f'cpu ({torch.get_num_threads()} threads)'


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(*, config_text: str, config: Path, seed: int, **extra) -> dict:
    commit, dirty = git_state()
    return dict(git_commit=commit, git_dirty=dirty, packages=package_versions(),
                config=str(Path(config).resolve().relative_to(ROOT)) if Path(config).resolve().is_relative_to(ROOT) else str(config),
                config_sha256=sha256_text(config_text), seed=seed, device=device(),
                created=datetime.now(timezone.utc).isoformat(timespec='seconds'), **extra)
