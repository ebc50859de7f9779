"""Bit-exact CPU runs on any x86-64 machine: one kernel path and one thread count, recorded.

torch chooses its CPU kernels when it starts, by what the processor offers: ATen's vectorised
ops (AVX2 or AVX-512), oneDNN's convolutions and MKL's GEMM likewise. Float results differ
between those paths, and with the number of threads, so the same run gave different smoke numbers
on a CPU with AVX-512 than on one without (and by hand, on all cores, than under Snakemake). A
CPU scale therefore pins all three to AVX2, which every x86-64 CPU of the last decade has, and
its thread count, through the environment of the stage process before torch is imported.
Measured on this project's AMD EPYC (AVX-512) machine: with the pin, ATen reports AVX2 and
oneDNN 'isa:Intel AVX2'; MKL_CBWR=AVX2 is reported as 'CNR:AUTO' there (MKL does not honour
that branch on this CPU), so MKL is restricted with MKL_ENABLE_INSTRUCTIONS instead.

Where the pin cannot hold (not x86-64, no AVX2, or LOCE_NO_CPU_PIN=1 to measure its cost) only
the threads are pinned, the provenance says so, and comparisons with published numbers fall
back to the scale's tolerance.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys

PIN_ISA = 'avx2'
NO_PIN_ENV = 'LOCE_NO_CPU_PIN'  # =1: leave the kernel path free (to measure what the pin costs)
PIN_ENV = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2',
           'MKL_ENABLE_INSTRUCTIONS': 'AVX2'}
THREAD_ENV = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')


def cpu_flags() -> set[str]:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pin_blocker() -> str | None:
    """Why the AVX2 pin cannot hold on this machine, or None when it can."""
    if os.environ.get(NO_PIN_ENV) == '1':
        return f'disabled by {NO_PIN_ENV}=1'
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return f'not x86-64 ({platform.machine()})'
    if 'avx2' not in cpu_flags():
        return 'the CPU has no AVX2'
    return None


def pinned_env(scale: dict, threads: int | None = None, scale_name: str = '') -> dict:
    """The environment a stage of this scale runs with: the thread count (a CPU scale's own; on
    a GPU scale `threads` if given) and, on a CPU scale where it can hold, the AVX2 pin."""
    if scale['gpus'] == 0:
        if threads not in (None, scale['threads']):
            raise SystemExit(f'--threads {threads}: the {scale_name} scale pins {scale["threads"]} '
                             'thread(s) per process, since its results depend on it')
        threads = scale['threads']
    env = {key: str(threads) for key in THREAD_ENV if threads}
    if scale['gpus'] == 0 and pin_blocker() is None:
        env.update(PIN_ENV)
    return env


def apply(scale: dict, threads: int | None = None, scale_name: str = '') -> None:
    """Set pinned_env for this process and its children. Must run before torch is imported:
    torch reads these once, when it starts (its thread pool follows OMP_NUM_THREADS)."""
    env = pinned_env(scale, threads, scale_name)
    if 'torch' in sys.modules and any(os.environ.get(k) != v for k, v in env.items()):
        raise RuntimeError('determinism.apply must run before torch is imported: the CPU kernel '
                           'path and thread pool are fixed when torch starts')
    os.environ.update(env)


def state() -> dict:
    """What the provenance records: machine, CPU, the kernel path in force and why, threads,
    and torch's build configuration."""
    import torch

    build = torch.__config__.show()
    capability = torch.backends.cpu.get_cpu_capability()
    pinned = all(os.environ.get(k) == v for k, v in PIN_ENV.items())
    blocker = pin_blocker()
    return dict(machine=platform.machine(), cpu_model=cpu_model(),
                cpu_avx512='avx512f' in cpu_flags(), cpu_capability=capability,
                isa_pinned=pinned and capability.lower() == PIN_ISA,
                isa_pin_blocker=blocker, isa_env={k: os.environ.get(k) for k in PIN_ENV},
                threads=torch.get_num_threads(),
                torch_build_sha256=hashlib.sha256(build.encode()).hexdigest(),
                torch_build=build)
