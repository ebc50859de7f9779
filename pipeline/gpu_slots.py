"""GPU slots on one multi-GPU host, so that jobs running side by side never share a device.

Snakemake counts a `gpu` resource but, running locally, never says *which* devices a job may
use (it sets no CUDA_VISIBLE_DEVICES), so two jobs would both start on device 0. Here every
device is a lock file; a job holds an exclusive fcntl lock on N of them for its whole life.
The kernel drops the locks when the last process holding them exits, however it exits (a
crash or `kill -9` included), so a slot is never leaked and there is nothing to clean up.

    python -m pipeline.gpu_slots N -- CMD ARGS...

takes N free devices (waiting while fewer are free), exports CUDA_VISIBLE_DEVICES and execs
CMD, which then holds the locks itself (its children too, e.g. the workers torchrun starts).

Where a scheduler has already chosen the devices (SLURM sets CUDA_VISIBLE_DEVICES; numbering
there is per job, so locking it would make unrelated jobs wait on each other), CMD runs
unchanged. To restrict the pool on a workstation set LOCE_GPU_DEVICES=0,1 rather than
CUDA_VISIBLE_DEVICES, which means "already assigned".
"""
from __future__ import annotations

import argparse
import fcntl
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .matrix import ROOT

POOL_ENV = 'LOCE_GPU_DEVICES'
LOCK_DIR_ENV = 'LOCE_GPU_LOCK_DIR'


def pool() -> list[str]:
    """The devices of this host: LOCE_GPU_DEVICES if set, else what nvidia-smi lists."""
    given = os.environ.get(POOL_ENV)
    if given is not None:
        devices = [d.strip() for d in given.split(',') if d.strip()]
        if not devices:
            raise SystemExit(f'{POOL_ENV} is set but empty; list device indices, '
                             f'e.g. {POOL_ENV}=0,1')
        return devices
    try:
        listed = subprocess.run(['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f'cannot list GPUs with nvidia-smi ({err}); set {POOL_ENV}=0,1,... '
                         'to name the devices of this host') from err
    return [line.strip() for line in listed.splitlines() if line.strip()]


def lock_dir() -> Path:
    """Per host, so that a work/ on a shared file system never couples two machines."""
    given = os.environ.get(LOCK_DIR_ENV)
    return Path(given) if given else ROOT / 'work' / '.gpu-locks' / socket.gethostname()


def try_acquire(n: int, devices: list[str], directory: Path) -> dict[str, int] | None:
    """Lock n of `devices` now ({device: fd}), or lock none and return None.

    All or nothing: a job never sits on some devices while waiting for more, so two jobs
    that each need most of the host cannot deadlock.
    """
    if n > len(devices):
        raise SystemExit(f'a job needs {n} GPUs but this host has {len(devices)} '
                         f'({",".join(devices) or "none"}); lower scales.<name>.gpus in '
                         f'pipeline/experiments.yaml or set {POOL_ENV}')
    directory.mkdir(parents=True, exist_ok=True)
    held: dict[str, int] = {}
    for device in devices:
        if len(held) == n:
            break
        fd = os.open(directory / f'gpu{device}.lock', os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held[device] = fd
    if len(held) < n:
        release(held)
        return None
    return held


def acquire(n: int, devices: list[str], directory: Path, *, poll_s: float = 2.0) -> dict[str, int]:
    """Lock n devices, waiting as long as it takes for enough of them to be free."""
    announced = False
    while (held := try_acquire(n, devices, directory)) is None:
        if not announced:
            print(f'[gpu_slots] waiting for {n} free GPU(s) of {",".join(devices)} '
                  f'(locks in {directory})', file=sys.stderr, flush=True)
            announced = True
        time.sleep(poll_s)
    return held


def release(held: dict[str, int]) -> None:
    for fd in held.values():
        os.close(fd)
    held.clear()


@contextmanager
def slots(n: int, devices: list[str] | None = None, directory: Path | None = None):
    """Hold n devices for the body of a `with`; yields their indices."""
    held = acquire(n, pool() if devices is None else devices,
                   lock_dir() if directory is None else directory)
    try:
        yield list(held)
    finally:
        release(held)


def run(n: int, command: list[str]) -> None:
    """Exec `command` on n free devices of this host (or unchanged, see the module doc)."""
    assigned = os.environ.get('CUDA_VISIBLE_DEVICES')
    if n > 0 and assigned is None:
        held = acquire(n, pool(), lock_dir())
        for fd in held.values():
            os.set_inheritable(fd, True)
        os.environ['CUDA_VISIBLE_DEVICES'] = ','.join(held)
    elif n > 0 and len([d for d in assigned.split(',') if d.strip()]) < n:
        raise SystemExit(f'a job needs {n} GPUs but CUDA_VISIBLE_DEVICES={assigned!r} '
                         'assigns fewer; request as many from the scheduler')
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise SystemExit(f'cannot run {command[0]!r}: {err}') from err


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog='python -m pipeline.gpu_slots', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('gpus', type=int, help='how many devices the command needs (0: none)')
    p.add_argument('command', nargs=argparse.REMAINDER,
                   help='-- then the command and its arguments')
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not command:
        p.error('no command given; usage: python -m pipeline.gpu_slots N -- CMD ARGS...')
    if args.gpus < 0:
        p.error('the number of GPUs must be >= 0')
    run(args.gpus, command)


if __name__ == '__main__':
    main()
