"""The published results (results/<scale>/, committed) against what this checkout produced
(work/<scale>/results/): `compare` prints a verdict, `publish` replaces the published copy.

A run writes only under work/, so committed numbers can never pass for this checkout's outputs.
The comparison is exact where both sides ran with the CPU kernel path pinned (see
pipeline/determinism.py) on CPUs of one vendor; elsewhere it falls back to the scale's tolerance
band and says why. The vendor matters although the pin holds. Measured at the smoke scale: the
pinned DAG on an AMD EPYC differs from the Intel-made one in 663 of 808 values, by up to 11 AP
(box AP of r50_v1 10.58 against 11.49), while two Intel Xeons agreed exactly on a stage-1 run,
and two AMD EPYC machines on every cell compared. Which library picks its kernels by vendor is
not established. So a scale may also publish the records of the same code made on another vendor's
CPUs, in results/<scale>/other-cpus/<vendor>/ (`publish --other-cpu`); a run is compared with
the records of its own vendor where there are some.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from . import matrix as mx

TASKS = ('bbox', 'segm')
OTHER_CPUS = 'other-cpus'  # results/<scale>/other-cpus/<vendor>/{metrics,analysis}/
SCORE_TOLERANCE = 0.05  # Figure 4's mean scores and accuracies, where the comparison is not exact


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_vendor(cpu: dict) -> str:
    """'AMD' or 'Intel' from a provenance.cpu record's model name, else the model name itself."""
    model = cpu.get('cpu_model') or 'unknown CPU'
    return next((vendor for vendor in ('AMD', 'Intel') if vendor in model), model)


def record_vendor(record: dict | None) -> str | None:
    return None if record is None else cpu_vendor(record.get('provenance', {}).get('cpu') or {})


def matching_root(published_root: Path, scale: str, run: str, seed: int,
                  vendor: str | None) -> Path:
    """Where the published records of a run made on this CPU vendor are: the scale's own, else
    its other-cpus set for that vendor where it has this run, else the scale's own."""
    main = _read(mx.metrics_path(scale, run, seed, published_root))
    if vendor is None or record_vendor(main) == vendor:
        return published_root
    other = published_root / OTHER_CPUS / vendor
    return other if mx.metrics_path(scale, run, seed, other).is_file() else published_root


def inexact_because(*records: dict) -> str | None:
    """Why records made on these machines cannot be expected to be bit-equal, or None."""
    cpus = [record.get('provenance', {}).get('cpu') or {} for record in records]
    if not all(cpu.get('isa_pinned') for cpu in cpus):
        return 'the CPU pin did not hold on one side (see provenance.cpu)'
    builds = {cpu.get('torch_build_sha256') for cpu in cpus}
    if len(builds) > 1:  # e.g. the CUDA image's torch 2.6.0+cu124 beside the host's 2.13.0
        return ('the two sides ran different torch builds (provenance.cpu.torch_build), whose '
                'CPU kernels compute differently')
    vendors = sorted({cpu_vendor(cpu) for cpu in cpus})
    if len(vendors) > 1:
        return ('the CPU pin held on both sides, but on CPUs of different vendors '
                f'({" and ".join(vendors)}), whose kernel libraries compute differently '
                '(see pipeline/published.py)')
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
    cells, missing, configs, compared, reasons, roots = [], [], [], 0, set(), set()
    for run in mx.runs_at(matrix, scale):
        for seed in mx.run_seeds(matrix, scale, run):
            fresh = _read(mx.metrics_path(scale, run, seed, fresh_root))
            root = matching_root(published_root, scale, run, seed, record_vendor(fresh))
            for kind, where in (('metrics', mx.metrics_path), ('analysis', mx.analysis_path)):
                ours = _read(where(scale, run, seed, fresh_root))
                theirs = _read(where(scale, run, seed, root))
                if theirs is not None:
                    roots.add(root)
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
                compared=compared, differing=differing, missing=missing, configs=configs,
                published_roots=sorted(roots))


def compare(scale: str, fresh_root: Path | None = None, published_root: Path | None = None) -> int:
    """Print the verdict; 0 when identical (or within the band), 1 otherwise."""
    d = differences(scale, fresh_root, published_root)
    published_at = d['published_roots'] or [published_root or mx.published_dir(scale)]
    where = (f'{mx.rel(fresh_root or mx.results_dir(scale))} vs published '
             f'{" and ".join(mx.rel(root) for root in published_at)}')
    if d['compared'] == 0:
        print(f'[compare] {where}: nothing to compare (no results on one side)')
        return 1
    mode = ('exact (CPU kernel path pinned on both sides, one CPU vendor)' if d['exact'] else
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


def publish(scale: str, allow_dirty: bool = False, other_cpu: bool = False) -> Path:
    """Replace results/<scale>/ by this checkout's work/<scale>/results/ (complete, clean code),
    keeping its other-cpus sets of other vendors; with `other_cpu`, replace only the records of
    results/<scale>/other-cpus/<this run's vendor>/ instead (a vendor other than the main set's)."""
    from .aggregate import collect_missing
    src, dest = mx.results_dir(scale), mx.published_dir(scale)
    if not (src / 'REPORT.md').is_file():
        raise SystemExit(f'{mx.rel(src)}: no REPORT.md; run the pipeline (`make {scale}` or '
                         f'snakemake --config scale={scale}) first')
    missing = collect_missing(scale, src)
    if missing:
        raise SystemExit(f'{mx.rel(src)}: {len(missing)} result files are missing (first: '
                         f'{missing[0]}); finish the pipeline before publishing')
    records = {p: json.loads(p.read_text()) for p in src.rglob('*.json')}
    dirty = [p for p, r in records.items() if (r.get('provenance') or {}).get('git_dirty')]
    if dirty and not allow_dirty:
        raise SystemExit(f'{mx.rel(dirty[0])} and {len(dirty) - 1} more were made on uncommitted '
                         'code; commit, rerun, then publish (or pass --allow-dirty)')
    vendors = {record_vendor(r) for r in records.values() if 'bbox' in r}
    if len(vendors) != 1:
        raise SystemExit(f'{mx.rel(src)}: made on CPUs of several vendors ({sorted(vendors)}); '
                         'rerun on one machine')
    vendor = vendors.pop()
    if other_cpu:
        main = {record_vendor(_read(p)) for p in (dest / 'metrics').rglob('*.json')}
        if not main or vendor in main:
            raise SystemExit(f'{mx.rel(dest)} is empty or was made on {vendor} CPUs: publish '
                             'without --other-cpu')
        dest = dest / OTHER_CPUS / vendor
    tmp = dest.with_name(f'.{dest.name}.publish-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    if other_cpu:  # the records only: tables and REPORT.md are the main set's
        for kind in ('metrics', 'analysis'):
            shutil.copytree(src / kind, tmp / kind)
    else:
        shutil.copytree(src, tmp)
        for other in (dest / OTHER_CPUS).glob('*'):
            if other.name != vendor:  # the new main set replaces its own vendor's
                shutil.copytree(other, tmp / OTHER_CPUS / other.name)
    old = dest.with_name(f'.{dest.name}.old-{os.getpid()}')
    if dest.exists():
        os.replace(dest, old)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    print(f'[publish] {mx.rel(src)} -> {mx.rel(dest)} (made on {vendor} CPUs)')
    return dest
