"""Bit-exact CPU runs on any x86-64 machine: one kernel path and one thread count, recorded.

torch chooses its CPU kernels when it starts, by what the processor offers, and float results
differ between kernel paths and thread counts. Pinning ATen, oneDNN and MKL to AVX2 made a run
repeat to the bit on CPUs of one vendor, but not across vendors: oneDNN picks its convolution
kernels by cache sizes as well as ISA, and MKL picks GEMM code by vendor (on AMD it reports
MKL_CBWR=AVX2 as CNR:AUTO, not honoured). So a CPU scale also turns oneDNN off in torch
(convolutions run as ATen's im2col + MKL GEMM) and sets MKL_CBWR=COMPATIBLE, the code path Intel
documents as giving identical results on Intel and compatible processors (same MKL, same
threads): every float reduction is then in code that does not ask who made the CPU. Its cost is
measured by benchmarks/bench_cpu_pin.py.

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
           'MKL_ENABLE_INSTRUCTIONS': 'AVX2', 'MKL_CBWR': 'COMPATIBLE'}
# What the provenance names the pin by: records made under different pins are not compared to
# the bit. Change it whenever PIN_ENV or the oneDNN switch changes.
PIN = 'avx2+mkl-cbwr-compatible+onednn-off'
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
    """Why the pin cannot hold on this machine, or None when it can."""
    if os.environ.get(NO_PIN_ENV) == '1':
        return f'disabled by {NO_PIN_ENV}=1'
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return f'not x86-64 ({platform.machine()})'
    if 'avx2' not in cpu_flags():
        return 'the CPU has no AVX2'
    return None


def pinned_env(scale: dict, threads: int | None = None, scale_name: str = '') -> dict:
    """The environment a stage of this scale runs with: the thread count (a CPU scale's own; on
    a GPU scale `threads` if given) and, on a CPU scale where it can hold, the kernel pin."""
    if scale['gpus'] == 0:
        if threads not in (None, scale['threads']):
            raise SystemExit(f'--threads {threads}: the {scale_name} scale pins {scale["threads"]} '
                             'thread(s) per process, since its results depend on it')
        threads = scale['threads']
    env = {key: str(threads) for key in THREAD_ENV if threads}
    if scale['gpus'] == 0 and pin_blocker() is None:
        env.update(PIN_ENV)
    return env


def apply(scale: dict, threads: int | None = None, scale_name: str = '',
          computes: bool = True) -> None:
    """Set pinned_env for this process and its children, then, where the pin holds and the
    process computes with torch (`computes`), turn oneDNN off in torch; the stages that only
    read records skip torch's import. Must run before torch is imported: torch reads the
    environment once, when it starts (its thread pool follows OMP_NUM_THREADS)."""
    env = pinned_env(scale, threads, scale_name)
    if 'torch' in sys.modules and any(os.environ.get(k) != v for k, v in env.items()):
        raise RuntimeError('determinism.apply must run before torch is imported: the CPU kernel '
                           'path and thread pool are fixed when torch starts')
    os.environ.update(env)
    if computes and PIN_ENV.items() <= env.items():
        import torch
        torch.backends.mkldnn.enabled = False


def state() -> dict:
    """What the provenance records: machine, CPU, the kernel path in force and why, threads,
    and torch's build configuration."""
    import torch

    build = torch.__config__.show()
    capability = torch.backends.cpu.get_cpu_capability()
    onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    pinned = (all(os.environ.get(k) == v for k, v in PIN_ENV.items())
              and capability.lower() == PIN_ISA and not onednn)
    return dict(machine=platform.machine(), cpu_model=cpu_model(),
                cpu_avx512='avx512f' in cpu_flags(), cpu_capability=capability,
                onednn_enabled=onednn, pin=PIN if pinned else None, isa_pinned=pinned,
                isa_pin_blocker=pin_blocker(), isa_env={k: os.environ.get(k) for k in PIN_ENV},
                threads=torch.get_num_threads(),
                torch_build_sha256=hashlib.sha256(build.encode()).hexdigest(),
                torch_build=build)
