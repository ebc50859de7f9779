"""`python -m pipeline STAGE ...`: the one CLI that Snakemake rules and DVC stages both call.

Without --seed, train/evaluate/analyse do every seed of the profile (what a DVC stage runs);
Snakemake passes one seed per job.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import matrix as mx


def _seeds(args) -> list[int]:
    return [args.seed] if args.seed is not None else mx.profile(mx.load(), args.profile)['seeds']


def _train(args):
    from .train import train
    for seed in _seeds(args):
        train(args.profile, args.run, seed, launcher=args.launcher, cfg_options=args.cfg_options)


def _evaluate(args):
    from .evaluate import evaluate
    for seed in _seeds(args):
        evaluate(args.profile, args.run, seed)


def _analyse(args):
    from .analyse import analyse
    for seed in _seeds(args):
        analyse(args.profile, args.run, seed)


def _aggregate(args):
    from .aggregate import aggregate
    aggregate(args.profile)


def _data(args):
    """The profile's data, as the matrix says: synthesized (smoke) or fetched (full)."""
    matrix = mx.load()
    root = mx.data_root(matrix, args.profile, 'lvis_v1').parent
    if mx.profile(matrix, args.profile)['data'] == 'synthesize':
        from .data.synthetic import synthesize
        synthesize(root, seed=0)
    else:
        from .data.fetch import fetch
        fetch(root)


def _synthesize(args):
    from .data.synthetic import synthesize
    synthesize(Path(args.out), seed=args.seed)


def _fetch(args):
    from .data.fetch import fetch
    fetch(Path(args.data_root), datasets=tuple(args.datasets), base_url=args.base_url)


def _subset(args):
    from .data.subset import subset
    subset(Path(args.src), Path(args.dst), num_images=args.num_images, seed=args.seed)


class _DictAction(argparse.Action):
    """KEY=VALUE pairs, parsed as mmengine's --cfg-options are (imported only when used)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from mmengine.config import DictAction
        DictAction(self.option_strings, self.dest)(parser, namespace, values, option_string)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m pipeline', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=None,
                   help='CPU threads for torch (default: all; Snakemake sets its job threads)')
    sub = p.add_subparsers(dest='stage', required=True)

    s = sub.add_parser('data', help="the profile's data: synthesize (smoke) or fetch (full)")
    s.add_argument('--profile', required=True)
    s.set_defaults(func=_data)

    s = sub.add_parser('synthesize', help='write the offline synthetic LVIS (v1 and v0.5 format)')
    s.add_argument('--out', default='data/smoke', help='output root (default: data/smoke)')
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=_synthesize)

    s = sub.add_parser('fetch', help='download, verify and extract LVIS and COCO 2017')
    s.add_argument('--data-root', default='data')
    s.add_argument('--datasets', nargs='+', default=['lvis_v1', 'lvis_v0.5', 'coco2017'])
    s.add_argument('--base-url', default=None, help='mirror replacing the official hosts')
    s.set_defaults(func=_fetch)

    s = sub.add_parser('subset', help='a deterministic N-image subset of an LVIS json')
    s.add_argument('--src', required=True)
    s.add_argument('--dst', required=True)
    s.add_argument('--num-images', type=int, required=True)
    s.add_argument('--seed', type=int, default=0)
    s.set_defaults(func=_subset)

    for name, func, text in (('train', _train, 'train one run (pretrain or fine-tune), resumable'),
                             ('evaluate', _evaluate, 'LVIS box/mask AP of a trained run'),
                             ('analyse', _analyse, 'per-class val score and accuracy (Figure 4)')):
        s = sub.add_parser(name, help=text)
        s.add_argument('--profile', required=True)
        s.add_argument('--run', required=True)
        s.add_argument('--seed', type=int, default=None, help='default: every seed of the profile')
        if name == 'train':
            s.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm'],
                           help='pytorch under torchrun, slurm under srun')
            s.add_argument('--cfg-options', nargs='+', action=_DictAction, default={},
                           metavar='KEY=VALUE', help='config overrides beyond the matrix\'s')
        s.set_defaults(func=func)

    s = sub.add_parser('aggregate', help='Tables 1-5, Figure 4 and REPORT.md of a profile')
    s.add_argument('--profile', required=True)
    s.set_defaults(func=_aggregate)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        import torch
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
        torch.set_num_threads(args.threads)
    os.chdir(mx.ROOT)
    args.func(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
