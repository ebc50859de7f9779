"""The commands of `python -m pipeline STAGE ...` (pipeline/__main__.py), the one CLI that
Snakemake rules and DVC stages both call, and that the fork server's children run.

Without --seed, train/evaluate/analyse do every seed of the scale (what a DVC stage runs);
Snakemake passes one seed per job. On a CPU scale the CPU kernel path and the thread count are
pinned here, before torch is imported, so a stage gives the same numbers whoever starts it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

from . import matrix as mx
from . import records, runlock


def _seeds(args, run=None) -> list[int]:
    """--seed, or every seed the run trains at the scale. A seed the matrix does not list for
    the run is refused (a typo would train a run no table reads) unless --unlisted-seed says it
    is on purpose."""
    run = run or args.run
    matrix = mx.load()
    mx.run_spec(matrix, run, args.scale)
    listed = mx.run_seeds(matrix, args.scale, run)
    if args.seed is None:
        return listed
    if args.seed not in listed and not args.unlisted_seed:
        raise SystemExit(f'--seed {args.seed}: the {args.scale} scale runs {run} with seed(s) '
                         f'{", ".join(map(str, listed))} ({mx.MATRIX_FILE.name}); give one of '
                         'them, or add --unlisted-seed for a scratch run that fills no table')
    return [args.seed]


def _cfg_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs parsed as mmengine's --cfg-options are (mmengine imports torch, so this
    runs after the CPU pin)."""
    if not pairs:
        return {}
    from mmengine.config import DictAction
    namespace = argparse.Namespace()
    DictAction(['--cfg-options'], 'cfg_options')(None, namespace, pairs)
    return namespace.cfg_options


def _resolve(args):
    from . import runconfig
    matrix = mx.load()
    names = [args.run] if args.run else list(mx.runs_at(matrix, args.scale))
    for run in names:
        for seed in _seeds(args, run):
            path, sha = runconfig.resolve_and_write(matrix, args.scale, run, seed)
            print(f'{mx.rel(path)} {sha[:12]}')


def _rank(launcher: str) -> int:
    """This process's rank before the process group exists (torchrun sets RANK, srun
    SLURM_PROCID): rank 0 alone takes the run's lock, the others follow it."""
    if launcher == 'none':
        return 0
    return int(os.environ.get('RANK') or os.environ.get('SLURM_PROCID') or 0)


def _rerun(args, seed: int) -> str:
    """What rerunning a stopped training does: resume from its newest checkpoint if it wrote one
    (train skips one it cannot load), else start afresh."""
    from .train import checkpoints
    work = mx.work_dir(args.scale, args.run, seed)
    found = checkpoints(work)
    command = f'`python -m pipeline {shlex.join(args.argv)}`'
    if found:
        return f'{command} resumes from the last checkpoint, {mx.rel(found[-1])}'
    return f'{mx.rel(work)} has no checkpoint yet, so {command} starts afresh'


def _train(args):
    from .train import train
    from .train_hooks import SIGTERM_EXIT
    options = _cfg_options(args.cfg_options)
    for seed in _seeds(args):
        lock = runlock.held(args.scale, args.run, seed) if _rank(args.launcher) == 0 \
            else nullcontext()
        with lock:
            try:
                train(args.scale, args.run, seed, launcher=args.launcher, cfg_options=options,
                      verbose=args.verbose, tensorboard=args.tensorboard)
            except KeyboardInterrupt:
                print(f'[train] {args.run} seed {seed} interrupted (Ctrl-C); '
                      f'{_rerun(args, seed)}', file=sys.stderr)
                return 130
            except SystemExit as stop:  # the log's SIGTERM line names no command to rerun
                if stop.code == SIGTERM_EXIT:
                    print(f'[train] {args.run} seed {seed} stopped by SIGTERM; '
                          f'{_rerun(args, seed)}', file=sys.stderr)
                raise


def _evaluate(args):
    if args.released:
        if args.run or args.seed is not None or args.out:
            raise SystemExit('evaluate: --released takes no --run, --seed or --out')
        from .released import evaluate as evaluate_released
        evaluate_released(args.scale, args.released, args.checkpoint)
        return
    if args.checkpoint or not args.run:
        raise SystemExit('evaluate: give --run RUN (a trained run), or --released NAME '
                         '--checkpoint FILE (the authors\' weights)')
    seeds = _seeds(args)
    if args.out:
        if not Path(args.out).parent.is_dir():
            raise SystemExit(f'evaluate: --out {args.out}: no directory '
                             f'{Path(args.out).parent}; create it first')
        if len(seeds) > 1:
            raise SystemExit(f'evaluate: --out saves one seed\'s detections; add --seed (one of '
                             f'{", ".join(map(str, seeds))})')
    from .evaluate import evaluate
    for seed in seeds:
        evaluate(args.scale, args.run, seed, out=args.out)


def _analyse(args):
    from .analyse import analyse
    for seed in _seeds(args):
        analyse(args.scale, args.run, seed)


def _aggregate(args):
    from .aggregate import aggregate
    done = aggregate(args.scale)
    missing = (f'; {len(done["missing"])} expected result files missing or stale (listed in '
               'REPORT.md)' if done['missing'] else '')
    print(f'[aggregate] {args.scale}: wrote {len(done["written"])} files (tables/, figures/, ap/, '
          f'REPORT.md) under {mx.rel(mx.results_dir(args.scale))}{missing}')


def _compare(args):
    from .published import compare
    return compare(args.scale)


def _publish(args):
    from .published import publish
    publish(args.scale, allow_dirty=args.allow_dirty)


def _data(args):
    """The scale's data, as the matrix says: synthesized or fetched, then the fine-tune subset
    of every dataset if the scale has one."""
    matrix = mx.load()
    spec = mx.scale(matrix, args.scale)
    root = mx.data_root(matrix, args.scale, 'lvis_v1').parent
    if spec['data'] == 'synthesize':
        from .data.synthetic import synthesize
        synthesize(root, seed=0, **spec.get('synthetic', {}))
    elif 'mirror' in spec:  # a rehearsal: the real fetch, from a mirror on 127.0.0.1
        from .data import hub_standin, mirror
        from .data.fetch import fetch
        built = mirror.build(mx.mirror_dir(args.scale), **spec['mirror'])
        with mirror.serve(built['out_dir']) as url:
            print(f'[data] {args.scale}: serving the mirror {mx.rel(built["out_dir"])} at {url}')
            fetch(root, base_url=url, sources_file=built['sources_file'],
                  lock_file=built['lock_file'], progress=False)
        hub_standin.prepare(mx.standins_dir(matrix, args.scale), seed=spec['mirror'].get('seed', 0))
    else:
        from .data.fetch import fetch
        fetch(root)
    subsets = ''
    if 'finetune_images' in spec:
        from .data.subset import subset
        for dataset in matrix['datasets']:
            subset(mx.annotation_file(matrix, args.scale, dataset, 'train'),
                   mx.annotation_file(matrix, args.scale, dataset, 'finetune'),
                   num_images=spec['finetune_images'], seed=0)
        subsets = (f', with fine-tune subsets of {spec["finetune_images"]} images '
                   f'(annotations/*_train_finetune.json)')
    how = 'synthesized' if spec['data'] == 'synthesize' else 'fetched and verified'
    print(f'[data] {args.scale}: {how} {", ".join(matrix["datasets"])} under {mx.rel(root)}'
          f'{subsets}')


def _size(size: float) -> str:
    """Bytes as `du -h` shows them."""
    for unit in ('B', 'KB', 'MB', 'GB'):
        if size < 1024:
            break
        size /= 1024
    else:
        unit = 'TB'
    return f'{size:.0f} B' if unit == 'B' else f'{size:.1f} {unit}'


def _clean(args):
    """The work dirs train set aside (made under another config, code or data: they are kept,
    never reused), listed with their sizes; removed only with --yes."""
    mx.scale(mx.load(), args.scale)
    found = sorted((mx.ROOT / 'work' / args.scale).glob('*/seed*.stale-*'))
    if not found:
        print(f'[clean] no set-aside work dirs under work/{args.scale}')
        return
    sizes = {}
    for path in found:  # hard links (final.pth is one) counted once, as du counts them
        files = {(f.stat().st_dev, f.stat().st_ino): f.stat().st_size
                 for f in path.rglob('*') if f.is_file() and not f.is_symlink()}
        sizes[path] = sum(files.values())
        print(f'{_size(sizes[path]):>10}  {mx.rel(path)}')
    total = f'{len(found)} set-aside work dirs, {_size(sum(sizes.values()))}'
    if not args.yes:
        print(f'[clean] dry run, nothing removed: {total}; `python -m pipeline clean --scale '
              f'{args.scale} --yes` removes them')
        return
    for path in found:
        shutil.rmtree(path)
    print(f'[clean] removed {total}')


def _synthesize(args):
    from .data.synthetic import synthesize
    synthesize(Path(args.out), seed=args.seed)


def _fetch(args):
    from .data.fetch import LOCK, SOURCES, fetch
    fetch(Path(args.data_root), datasets=tuple(args.datasets), base_url=args.base_url,
          sources_file=Path(args.sources or SOURCES), lock_file=Path(args.lock_file or LOCK))


def _subset(args):
    from .data.subset import subset
    subset(Path(args.src), Path(args.dst), num_images=args.num_images, seed=args.seed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m pipeline', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads per process on a GPU scale (CPU scales pin their own)')
    sub = p.add_subparsers(dest='stage', required=True)

    s = sub.add_parser('data', help="the scale's data: synthesized or fetched, as the matrix says")
    s.add_argument('--scale', required=True)
    s.set_defaults(func=_data)

    s = sub.add_parser('synthesize', help='write the offline synthetic LVIS (v1 and v0.5 format)')
    s.add_argument('--out', default='data/smoke', help='output root (default: data/smoke)')
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=_synthesize)

    s = sub.add_parser('fetch', help='download, verify and extract LVIS and COCO 2017')
    s.add_argument('--data-root', default='data')
    s.add_argument('--datasets', nargs='+', default=['lvis_v1', 'lvis_v0.5', 'coco2017'])
    s.add_argument('--base-url', default=None, help='mirror replacing the official hosts')
    s.add_argument('--sources', default=None, metavar='FILE',
                   help="the mirror's sources.yaml (default: pipeline/data/sources.yaml)")
    s.add_argument('--lock-file', default=None, metavar='FILE',
                   help="the mirror's own lock of checksums (default: the committed one, which "
                        'records only what the official hosts served)')
    s.set_defaults(func=_fetch)

    s = sub.add_parser('subset', help='a deterministic N-image subset of an LVIS json')
    s.add_argument('--src', required=True)
    s.add_argument('--dst', required=True)
    s.add_argument('--num-images', type=int, required=True)
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=_subset)

    s = sub.add_parser('resolve', help="write runs' resolved configs (only those that changed)")
    s.add_argument('--scale', required=True)
    s.add_argument('--run', default=None, help='default: every run of the matrix')
    s.add_argument('--seed', type=int, default=None, help='default: every seed of the scale')
    s.add_argument('--unlisted-seed', action='store_true',
                   help='accept a --seed the matrix does not list for the run')
    s.set_defaults(func=_resolve)

    for name, func, text in (('train', _train, 'train one run (pretrain or fine-tune), resumable'),
                             ('evaluate', _evaluate, 'LVIS box/mask AP of a trained run'),
                             ('analyse', _analyse, 'per-class val score and accuracy (Figure 4)')):
        s = sub.add_parser(name, help=text)
        s.add_argument('--scale', required=True)
        s.add_argument('--run', required=name != 'evaluate')
        s.add_argument('--seed', type=int, default=None, help='default: every seed of the scale')
        s.add_argument('--unlisted-seed', action='store_true',
                       help="accept a --seed the matrix does not list for the run (a scratch "
                            'run; it fills no table)')
        if name == 'evaluate':
            s.add_argument('--released', metavar='NAME', default=None,
                           help="instead of a run: the authors' released model NAME "
                                '(experiments.yaml `released`), converted by pipeline/released.py')
            s.add_argument('--checkpoint', metavar='FILE', default=None,
                           help="with --released: the downloaded file (default: the entry's "
                                '`file`)')
            s.add_argument('--out', metavar='FILE_PREFIX', default=None, type=os.path.abspath,
                           help='also save the detections as LVIS-format JSON: '
                                'FILE_PREFIX.bbox.json and FILE_PREFIX.segm.json')
        if name == 'train':
            s.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm'],
                           help='pytorch under torchrun, slurm under srun')
            s.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                           help="overrides beyond the matrix's; each key must exist in the "
                                "config, '+KEY=VALUE' adds a new one")
            s.add_argument('--verbose', action='store_true',
                           help="print mmengine's whole log (environment, config, every logged "
                                'iteration), not only a progress line; the log file has it '
                                'either way')
            s.add_argument('--tensorboard', action='store_true',
                           help='also log the training scalars for TensorBoard, under the run\'s '
                                'work dir (<timestamp>/vis_data/); added at run time, so not '
                                "part of the resolved config or its hash (needs `pip install "
                                "tensorboard`)")
        s.set_defaults(func=func)

    s = sub.add_parser('aggregate', help='Tables 1-5, Figure 4 and REPORT.md of a scale')
    s.add_argument('--scale', required=True)
    s.set_defaults(func=_aggregate)

    s = sub.add_parser('compare', help="this checkout's results against the published ones: "
                                       'identical, or the cells that differ')
    s.add_argument('--scale', required=True)
    s.set_defaults(func=_compare)

    s = sub.add_parser('publish', help="copy this checkout's results to results/<scale>/")
    s.add_argument('--scale', required=True)
    s.add_argument('--allow-dirty', action='store_true',
                   help='publish results made on uncommitted code')
    s.set_defaults(func=_publish)

    s = sub.add_parser('clean', help='list the work dirs train set aside (*.stale-*) with their '
                                     'sizes; remove them with --yes')
    s.add_argument('--scale', required=True)
    s.add_argument('--yes', action='store_true', help='remove them (default: only list them)')
    s.set_defaults(func=_clean)
    return p


# The stages that compute with torch: a fork server may run them (pipeline/forkserver.py), and
# only they pay torch's import to turn oneDNN off (determinism.apply).
TORCH_STAGES = ('train', 'evaluate', 'analyse')


def main(argv=None, delegate=None) -> int:
    """Run one command. `delegate(argv, pinned_env)` may run a torch stage elsewhere (the fork
    server: pipeline/__main__.py passes it) and returns its exit code, or None to run it here.

    Errors the CLI can explain end in one line: SystemExit messages, a result file that
    cannot be read (records.RecordError names it and the fix) and Ctrl-C (exit 130, as a
    shell reports SIGINT); anything else keeps its traceback, being a bug to report."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        if getattr(args, 'scale', None) and args.stage != 'clean':  # clean computes nothing
            from . import determinism
            matrix = mx.load()
            spec = mx.scale(matrix, args.scale)
            if 'mirror' in spec and args.stage in TORCH_STAGES:
                from .data.hub_standin import activate
                activate(mx.standins_dir(matrix, args.scale))
            if delegate and args.stage in TORCH_STAGES and 'torch' not in sys.modules:
                code = delegate(argv, determinism.pinned_env(spec, args.threads, args.scale))
                if code is not None:
                    return code
            determinism.apply(spec, threads=args.threads, scale_name=args.scale,
                              computes=args.stage in TORCH_STAGES)
        os.chdir(mx.ROOT)
        return args.func(args) or 0
    except records.RecordError as err:
        print(f'[{args.stage}] {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'[{args.stage}] interrupted (Ctrl-C); rerun `python -m pipeline '
              f'{shlex.join(argv)}` to do it again', file=sys.stderr)
        return 130
