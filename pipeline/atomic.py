"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


def write_bytes(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        os.unlink(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise SystemExit(f'{path}: no space left on device while writing it; the previous '
                             'file is unchanged. Free disk space and rerun the stage') from err
        raise
    return path


def write_text(path: Path | str, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: Path | str, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def replace_dir(new: Path | str, dest: Path | str) -> Path:
    """Put the finished folder `new` at `dest` (same file system): the old `dest` is moved aside
    first and removed after, so `dest` is never half-written."""
    new, dest = Path(new), Path(dest)
    old = dest.with_name(f'.{dest.name}.old-{os.getpid()}')
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
