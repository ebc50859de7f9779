"""One `train` of a run and seed at a time: work/<scale>/locks/<run>/seed<k>.lock, holding the
holder's pid.

Two trainings of one run and seed would write the same checkpoints and final.pth. The lock is
an flock, which the kernel releases however its holder ends (Snakemake's and DVC's lock files
work alike), so a crash never blocks the next run; the pid in the file says who holds it, and a
pid left in a file nobody locks is a holder that was killed, taken over saying so. The file
lives outside the work dir, which train may move aside, and outside DVC's outputs.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from . import matrix as mx


def lock_file(scale: str, run: str, seed: int) -> Path:
    return mx.ROOT / 'work' / scale / 'locks' / run / f'seed{seed}.lock'


@contextmanager
def held(scale: str, run: str, seed: int):
    """Hold the run's lock while the body trains; refuse at once if another process holds it."""
    path = lock_file(scale, run, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode().strip() or 'unknown'
            raise SystemExit(f'{mx.rel(path)}: {run} seed {seed} ({scale}) is being trained by '
                             f'pid {holder}; wait for it to end, or stop it and rerun') from None
        left = os.pread(fd, 32, 0).decode().strip()
        if left:
            print(f'[train] {mx.rel(path)}: taking over the lock left by pid {left}, which '
                  'ended without releasing it')
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
