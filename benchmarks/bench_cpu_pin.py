"""What the vendor-neutral CPU pin costs: the same training stages under the earlier pin and
under today's, on this machine, in one run.

Each workload is `python -m pipeline train` of one run and seed, exactly as the DAG runs it, in
a copy of this checkout (tests/checkout.py) with copies of this checkout's data and of the
fine-tune's stage-1 work dir:
- smoke `r50_v1` seed 0: a smoke stage 1 (150 iterations of the tiny Mask R-CNN), the kind of
  job that dominates the smoke DAG's compute;
- proxy `loce_r50_v1` seed 0: a proxy LOCE fine-tune (memory warm-up included) from
  work/proxy/r50_v1/seed0, which must exist (`make proxy` first).
Pins:
- `avx2`, the pin before: ATen, oneDNN and MKL instructions limited to AVX2, oneDNN on, MKL's
  branch its own (LOCE_NO_CPU_PIN=1 with those variables set here);
- `neutral`, today's (pipeline/determinism.py): the same plus MKL_CBWR=COMPATIBLE, oneDNN off.
Both at one thread. The pins alternate for --rounds rounds (order swapped each round), a run's
work dir removed before each training; timed is the Runner's training (train.json's
train_wall_s). Prints each time, the median per workload and pin, their ratio, and the load.

    .venv/bin/python benchmarks/bench_cpu_pin.py                    # 2 rounds, both workloads
    .venv/bin/python benchmarks/bench_cpu_pin.py --workloads smoke --rounds 3
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]

from checkout import copy_checkout  # noqa: E402
from pipeline import determinism  # noqa: E402
from pipeline import matrix as mx  # noqa: E402

WORKLOADS = {'smoke': ('smoke', 'r50_v1'), 'proxy': ('proxy', 'loce_r50_v1')}
EARLIER_PIN = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2',
               'MKL_ENABLE_INSTRUCTIONS': 'AVX2', determinism.NO_PIN_ENV: '1'}


def environment(pin: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in (*determinism.PIN_ENV, determinism.NO_PIN_ENV, 'LOCE_FORKSERVER')}
    env.update({k: '1' for k in determinism.THREAD_ENV})
    return dict(env, **EARLIER_PIN) if pin == 'avx2' else env


def prepare(copy: Path, scale: str, run: str) -> None:
    """Copy the scale's data and, for a fine-tune, its stage-1 work dir into the copy."""
    matrix = mx.load()
    data = mx.data_root(matrix, scale, 'lvis_v1').parent
    if not (data / 'lvis_v1').is_dir():
        raise SystemExit(f'{mx.rel(data)}: no data; run `python -m pipeline data --scale {scale}`')
    if not (copy / mx.rel(data)).exists():  # a copy: a link would resolve outside the copy and
        shutil.copytree(data, copy / mx.rel(data))  # change the resolved configs' data paths
    parent = mx.run_spec(matrix, run, scale).get('pretrain')
    if parent:
        work = mx.work_dir(scale, parent, 0)
        if not mx.checkpoint(scale, parent, 0).is_file():
            raise SystemExit(f'{mx.rel(work)}: no trained stage 1; run `make {scale}` first')
        (copy / mx.rel(work)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(work, copy / mx.rel(work), dirs_exist_ok=True)


def train(copy: Path, scale: str, run: str, pin: str) -> float:
    work = copy / mx.rel(mx.work_dir(scale, run, 0))
    shutil.rmtree(work, ignore_errors=True)
    done = subprocess.run([sys.executable, '-m', 'pipeline', 'train', '--scale', scale, '--run',
                           run, '--seed', '0'], cwd=copy, env=environment(pin),
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f'{scale} {run} under pin {pin} failed:\n{done.stderr[-3000:]}')
    summary = json.loads((work / 'train.json').read_text())
    cpu = summary['provenance']['cpu']
    want = (determinism.PIN, False) if pin == 'neutral' else (None, True)
    if (cpu['pin'], cpu['onednn_enabled']) != want:
        raise SystemExit(f'{scale} {run}: pin {pin} did not hold as meant: {cpu}')
    return summary['train_wall_s']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workloads', nargs='+', default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--json', help='also write the times here')
    args = parser.parse_args()
    if determinism.pin_blocker():
        raise SystemExit(f'the pin cannot hold here: {determinism.pin_blocker()}')
    times = {(w, pin): [] for w in args.workloads for pin in ('avx2', 'neutral')}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix='bench-cpu-pin-') as tmp:
        copy = copy_checkout(Path(tmp), results=False)
        for name in args.workloads:
            prepare(copy, *WORKLOADS[name])
        for round_ in range(args.rounds):
            for pin in (('avx2', 'neutral') if round_ % 2 == 0 else ('neutral', 'avx2')):
                for name in args.workloads:
                    wall = train(copy, *WORKLOADS[name], pin)
                    times[name, pin].append(wall)
                    load.append(os.getloadavg()[0])
                    print(f'round {round_} {name:6} {pin:8} {wall:8.1f} s', flush=True)
    print(f'\n{determinism.cpu_model()}; 1 thread; load average (1 min) '
          f'{min(load):.2f}-{max(load):.2f}; medians of {args.rounds} round(s)')
    print(f'{"workload":28}{"avx2 (s)":>10}{"neutral (s)":>13}{"ratio":>8}')
    for name in args.workloads:
        before, after = (statistics.median(times[name, pin]) for pin in ('avx2', 'neutral'))
        label = '{} {}'.format(*WORKLOADS[name])
        print(f'{label:28}{before:10.1f}{after:13.1f}{after / before:8.2f}')
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            cpu=determinism.cpu_model(), rounds=args.rounds, load=load,
            times={f'{w} {pin}': t for (w, pin), t in times.items()}), indent=1) + '\n')


if __name__ == '__main__':
    main()
