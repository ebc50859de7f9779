"""The published results (results/<scale>/, committed) against what this checkout produced
(work/<scale>/results/): `compare` prints a verdict, `publish` replaces the published copy.

A run writes only under work/, so committed numbers can never pass for this checkout's outputs.
The comparison is exact where both sides ran under the same CPU pin (pipeline/determinism.py:
a kernel path chosen not to depend on the CPU's vendor or model) and the same torch build;
elsewhere it falls back to the scale's tolerance band and says why. One set per scale: a
record's CPU model is in its provenance, and never selects which published set it is compared
with.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from . import matrix as mx
from . import records

TASKS = ('bbox', 'segm')
SCORE_TOLERANCE = 0.05  # Figure 4's mean scores and accuracies, where the comparison is not exact


def _read(kind: str, path: Path, run: str, seed: int) -> dict | None:
    """The record, checked as the aggregate checks it: a malformed one stops the comparison with
    a message naming the file (records.RecordError), never a traceback from deep inside it."""
    return records.read_checked(kind, path, run, seed) if path.is_file() else None


def inexact_because(*records: dict) -> str | None:
    """Why records made on these machines cannot be expected to be bit-equal, or None."""
    cpus = [record.get('provenance', {}).get('cpu') or {} for record in records]
    if not all(cpu.get('isa_pinned') for cpu in cpus):
        return 'the CPU pin did not hold on one side (see provenance.cpu)'
    pins = {cpu.get('pin') for cpu in cpus}
    if len(pins) > 1:  # e.g. a record made before the pin became vendor-neutral
        named = ', '.join(sorted(str(pin) for pin in pins))
        return f'the two sides ran under different CPU pins ({named}; provenance.cpu.pin)'
    builds = {cpu.get('torch_build_sha256') for cpu in cpus}
    if len(builds) > 1:  # e.g. the CUDA image's torch 2.6.0+cu124 beside the host's 2.13.0
        return ('the two sides ran different torch builds (provenance.cpu.torch_build), whose '
                'CPU kernels compute differently')
    return None


def _values(kind: str, record: dict) -> dict:
    """Every number of a metrics or analysis record, by a name that says where it is."""
    if kind == 'metrics':
        return {f'{task}.{key}': value for task in TASKS for key, value in record[task].items()}
    return {f'{c["name"]}.{field}': c[field] for c in record['classes']
            for field in ('mean_score', 'accuracy')}


def _differs(a, b, tolerance: float | None) -> bool:
    if a is None or b is None:
        return a is not b
    if tolerance is None:
        return a != b
    return not math.isclose(a, b, abs_tol=tolerance)


def differences(scale: str, fresh_root: Path | None = None,
                published_root: Path | None = None) -> dict:
    """Cells that differ between fresh and published results, files missing on either side,
    config hashes that differ, and whether the comparison was exact."""
    matrix = mx.load()
    spec = mx.scale(matrix, scale)
    fresh_root = fresh_root or mx.results_dir(scale)
    published_root = published_root or mx.published_dir(scale)
    cells, missing, configs, compared, reasons = [], [], [], 0, set()
    for run in mx.runs_at(matrix, scale):
        for seed in mx.run_seeds(matrix, scale, run):
            for kind, where in (('metrics', mx.metrics_path), ('analysis', mx.analysis_path)):
                ours = _read(kind, where(scale, run, seed, fresh_root), run, seed)
                theirs = _read(kind, where(scale, run, seed, published_root), run, seed)
                if ours is None and theirs is None:
                    continue
                if ours is None or theirs is None:
                    missing.append((kind, run, seed, 'this checkout' if ours is None else 'published'))
                    continue
                ours_sha = ours.get('provenance', {}).get('config_sha256')
                if ours_sha != theirs.get('provenance', {}).get('config_sha256') \
                        and (run, seed) not in configs:
                    configs.append((run, seed))
                why = inexact_because(ours, theirs) if kind == 'metrics' else None
                if why:
                    reasons.add(why)
                pair = _values(kind, ours), _values(kind, theirs)
                for name in sorted(set(pair[0]) | set(pair[1])):
                    compared += 1
                    cells.append((kind, run, seed, name, pair[0].get(name), pair[1].get(name)))
    exact = not reasons
    tolerance = None if exact else spec.get('tolerance')
    differing = [c for c in cells if _differs(c[4], c[5], tolerance if c[0] == 'metrics' else
                                              None if exact else SCORE_TOLERANCE)]
    return dict(exact=exact, inexact_because=sorted(reasons), tolerance=tolerance,
                compared=compared, differing=differing, missing=missing, configs=configs)


def compare(scale: str, fresh_root: Path | None = None, published_root: Path | None = None) -> int:
    """Print the verdict; 0 when identical (or within the band), 1 otherwise."""
    d = differences(scale, fresh_root, published_root)
    where = (f'{mx.rel(fresh_root or mx.results_dir(scale))} vs published '
             f'{mx.rel(published_root or mx.published_dir(scale))}')
    if d['compared'] == 0:
        print(f'[compare] {where}: nothing to compare (no results on one side)')
        return 1
    mode = ('exact (same CPU pin and torch build on both sides)' if d['exact'] else
            f'within ±{d["tolerance"]} AP and ±{SCORE_TOLERANCE} score/accuracy: '
            f'{"; ".join(d["inexact_because"])}, so bit-exact equality is not expected')
    lines = []
    for run, seed in d['configs']:
        lines.append(f'- {run} seed {seed}: config hash differs from the published one (the '
                     'published results come from another config)')
    for kind, run, seed, side in d['missing']:
        lines.append(f'- {kind} of {run} seed {seed}: missing in {side}')
    if not (d['differing'] or lines):
        verdict = 'identical' if d['exact'] else 'within tolerance'
        print(f'[compare] {verdict}: {d["compared"]} values of {where}; comparison {mode}')
        return 0
    print(f'[compare] DIFFERENT: {len(d["differing"])} of {d["compared"]} values differ '
          f'({where}); comparison {mode}')
    print('\n'.join(lines))
    if d['differing']:
        print('\n| kind | run | seed | value | this checkout | published |\n|---|---|---|---|---|---|')
        for kind, run, seed, name, ours, theirs in d['differing']:
            print(f'| {kind} | {run} | {seed} | {name} | {ours} | {theirs} |')
    return 1


def publish(scale: str, allow_dirty: bool = False) -> Path:
    """Replace results/<scale>/ by this checkout's work/<scale>/results/ (complete, clean code)."""
    from .aggregate import collect_missing
    src, dest = mx.results_dir(scale), mx.published_dir(scale)
    if not (src / 'REPORT.md').is_file():
        raise SystemExit(f'{mx.rel(src)}: no REPORT.md; run the pipeline (`make {scale}` or '
                         f'snakemake --config scale={scale}) first')
    missing = collect_missing(scale, src)
    if missing:
        raise SystemExit(f'{mx.rel(src)}: {len(missing)} result files are missing (first: '
                         f'{missing[0]}); finish the pipeline before publishing')
    made = {p: records.read_json(p) for p in src.rglob('*.json')}
    dirty = [p for p, r in made.items() if (r.get('provenance') or {}).get('git_dirty')]
    if dirty and not allow_dirty:
        raise SystemExit(f'{mx.rel(dirty[0])} and {len(dirty) - 1} more were made on uncommitted '
                         'code; commit, rerun, then publish (or pass --allow-dirty)')
    tmp = dest.with_name(f'.{dest.name}.publish-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dest.with_name(f'.{dest.name}.old-{os.getpid()}')
    if dest.exists():
        os.replace(dest, old)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    print(f'[publish] {mx.rel(src)} -> {mx.rel(dest)}')
    return dest
