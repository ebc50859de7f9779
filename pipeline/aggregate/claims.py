"""Table 1 measured against seed noise: per seed, each row minus the CE baseline of the same
seed (paired), its mean and 95 % t-interval, and the paper's claims read off those intervals.

A claim holds when its interval lies on the claimed side of 0, does not hold when it lies on
the other side, and is inconclusive when it spans 0 (or has fewer than two seeds). The
pre-registered design criteria of a scale (`criteria` in experiments.yaml) are checked here too.
"""
from __future__ import annotations

import math

import numpy as np

from .. import matrix as mx

# Two-sided 95 % quantiles of Student's t by degrees of freedom (n - 1).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
PAIRED_METRICS = [(task, key) for task in ('bbox', 'segm') for key in ('AP', 'APr', 'APc', 'APf')]
TASK_NAMES = {'bbox': 'box', 'segm': 'mask'}


def table1_rows(paper: dict) -> tuple[dict, tuple[str, ...]]:
    """Table 1's baselines (key -> description) and the rows set against them: every other row
    in paper.yaml's order, then the baselines after the first (each row minus the first
    baseline; the others minus each further baseline)."""
    spec = paper['tables']['table1']
    baselines = spec['baselines']
    first = next(iter(baselines))
    rows = tuple(r for r in spec['rows'] if r not in baselines) + tuple(b for b in baselines
                                                                        if b != first)
    return baselines, rows


def t975(df: int) -> float:
    return T975[max(k for k in T975 if k <= df)] if df < 30 else 1.96


def interval(values: list[float]) -> dict:
    """Mean and 95 % t-interval of `values` (no interval below two values)."""
    n = len(values)
    if n == 0:
        return dict(n=0, mean=None, lo=None, hi=None)
    mean = float(np.mean(values))
    if n < 2:
        return dict(n=1, mean=mean, lo=None, hi=None)
    half = t975(n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return dict(n=n, mean=mean, lo=mean - half, hi=mean + half)


def verdict(stat: dict) -> str:
    if stat['lo'] is None:
        return 'inconclusive (fewer than two seeds)'
    if stat['lo'] > 0:
        return 'holds'
    if stat['hi'] < 0:
        return 'does not hold'
    return 'inconclusive (interval spans 0)'


def _value(record: dict, task: str, key: str):
    return record['tasks'][task].get(key)


def paired(results: dict, run: str | None, base: str | None, task: str, key: str) -> dict:
    """Per seed both runs have, run minus base, then the interval over seeds."""
    if run is None or base is None:
        return interval([])
    ours, theirs = results['metrics'].get(run, {}), results['metrics'].get(base, {})
    diffs = [_value(ours[s], task, key) - _value(theirs[s], task, key)
             for s in sorted(set(ours) & set(theirs))
             if None not in (_value(ours[s], task, key), _value(theirs[s], task, key))]
    return interval(diffs)


def _cell(stat: dict) -> str:
    if stat['mean'] is None:
        return 'n/a'
    if stat['lo'] is None:
        return f'{stat["mean"]:+.2f} (n=1)'
    return f'{stat["mean"]:+.2f} [{stat["lo"]:+.2f}, {stat["hi"]:+.2f}]'


def _md_table(header, rows):
    return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
            + ['| ' + ' | '.join(r) + ' |' for r in rows])


def per_seed_section(summary: dict, runs: dict) -> list[str]:
    """Table 1's rows seed by seed (what the paired differences are taken over); only where the
    scale has several seeds, since with one the table itself is that seed."""
    seeds = sorted({s for run in runs.values() if run
                    for s in summary['results']['metrics'].get(run, {})})
    if len(seeds) < 2:
        return []
    rows = []
    for row, run in runs.items():
        for seed, record in sorted(summary['results']['metrics'].get(run, {}).items()):
            rows.append([f'{row} (`{run}`)', str(seed)] + [
                'n/a' if _value(record, t, k) is None else f'{_value(record, t, k):.2f}'
                for t, k in PAIRED_METRICS])
    header = ['row', 'seed'] + [f'{TASK_NAMES[t]} {k}' for t, k in PAIRED_METRICS]
    return ['## Table 1 seed by seed', '', *_md_table(header, rows), '']


def section(summary: dict) -> list[str]:
    """The per-seed values, the paired differences and the claim lines, for REPORT.md."""
    results, cells, paper = summary['results'], summary['cells'], summary['paper']
    baselines, rows_of = table1_rows(paper)
    first = next(iter(baselines))
    runs = {row: cells.get(f'table1/{row}') for row in (first, *rows_of)}
    lines = per_seed_section(summary, runs) + [
        '## Table 1 against seed noise (paired by seed)', '',
        'Each row minus the baseline of the same seed, then mean and 95 % t-interval over the '
        'seeds both have (box and mask AP, percent).', '']
    header = ['row'] + [f'{TASK_NAMES[t]} {k}' for t, k in PAIRED_METRICS]
    for base, name in baselines.items():
        if runs[base] is None:
            lines += [f'Against {name}: not run at this scale.', '']
            continue
        rows = [[f'{row} − {base}'] + [_cell(paired(results, runs[row], runs[base], t, k))
                                        for t, k in PAIRED_METRICS]
                for row in rows_of if row != base]
        lines += [f'Against {name} (`{runs[base]}`):', '', *_md_table(header, rows), '']
    lines += ['Claims of the paper (holds: the interval lies on the claimed side of 0; does not '
              'hold: on the other side; inconclusive: it spans 0):', '']
    for base, name in baselines.items():
        for claim in paper['tables']['table1']['claims']:
            # A claim against `base` is read once per baseline; one between two rows once.
            if (runs[base] if claim['than'] == 'base' else base == first):
                ref = base if claim['than'] == 'base' else claim['than']
                column = paper['columns'][claim['metric']]
                stat = paired(results, runs[claim['row']], runs[ref], column['task'],
                              column['metric'])
                lines.append(f'- {claim["text"].format(base=name)}: **{verdict(stat)}** '
                             f'({_cell(stat)})')
    flat = flattening(summary)
    lines.append(f'- LOCE lifts the rare classes\' mean score over softmax CE (Figure 4 c minus a, '
                 f'rare group): **{verdict(flat)}** ({_cell(flat)})')
    return lines + [''] + _half_memory(summary, runs['loce'])


def _half_memory(summary: dict, loce: str | None) -> list[str]:
    """The feature memory in float16 against the same fine-tune in float32, paired by seed."""
    results = summary['results']
    half = [run for run, spec in mx.runs_at(summary['matrix'], summary['scale']).items()
            if spec['options'].get('model.roi_head.mfs.dtype') == 'float16']
    if not half or loce is None:
        return []
    rows = [[f'`{run}` − `{loce}`'] + [_cell(paired(results, run, loce, t, k))
                                       for t, k in PAIRED_METRICS] for run in half]
    header = ['float16 memory'] + [f'{TASK_NAMES[t]} {k}' for t, k in PAIRED_METRICS]
    return ['## Feature memory in float16 (half the bytes) against float32, paired by seed', '',
            *_md_table(header, rows), '']


def _group_mean(classes: list[dict], group: str, field: str = 'mean_score'):
    values = [c[field] for c in classes if c['frequency'] == group and c[field] is not None]
    return float(np.mean(values)) if values else None


def flattening(summary: dict) -> dict:
    """Per LOCE seed, its rare-group mean score minus softmax CE's (same seed, or the shared
    stage-1 model's)."""
    analysis = summary['results']['analysis']
    panels = summary['matrix']['figure4']
    ce, loce = analysis.get(panels['a']['run'], {}), analysis.get(panels['c']['run'], {})
    diffs = []
    for seed, record in sorted(loce.items()):
        ref = ce.get(seed) or (ce[min(ce)] if ce else None)
        if ref is None:
            continue
        ours, theirs = _group_mean(record['classes'], 'r'), _group_mean(ref['classes'], 'r')
        if None not in (ours, theirs):
            diffs.append(ours - theirs)
    return interval(diffs)


def criteria_section(summary: dict) -> list[str]:
    """The scale's pre-registered design criteria, each measured and checked."""
    wanted = summary['matrix']['scales'][summary['scale']].get('criteria')
    if not wanted:
        return []
    results, cells = summary['results'], summary['cells']
    base = results['metrics'].get(cells.get('table1/baseline'), {})
    ap = [r['tasks']['segm']['AP'] for r in base.values() if r['tasks']['segm']['AP'] is not None]
    apf = interval([r['tasks']['segm']['APf'] for r in base.values()
                    if r['tasks']['segm']['APf'] is not None])['mean']
    apr = interval([r['tasks']['segm']['APr'] for r in base.values()
                    if r['tasks']['segm']['APr'] is not None])['mean']
    panel_a = summary['results']['analysis'].get(summary['matrix']['figure4']['a']['run'], {})
    classes = panel_a[min(panel_a)]['classes'] if panel_a else []
    rare_score = _group_mean(classes, 'r')
    rare_val = min((c['val_instances'] for c in classes if c['frequency'] == 'r'), default=None)
    std = float(np.std(ap, ddof=1)) if len(ap) > 1 else None
    checks = [
        ('CE baseline mask APf', apf, '≥', wanted['baseline_apf_min']),
        ('CE baseline mask APr / APf', None if None in (apr, apf) or not apf else apr / apf, '≤',
         wanted['baseline_apr_share_max']),
        ('Figure 4(a) rare-group mean score', rare_score, '≤', wanted['rare_mean_score_max']),
        ('fewest val instances of a rare class', rare_val, '≥',
         wanted['rare_val_instances_min']),
        ('CE baseline seed std of mask AP', std, '≤', wanted['baseline_ap_std_max']),
    ]
    lines = ['## Design criteria (pre-registered, checked on the CE baseline)', '',
             *_md_table(['criterion', 'measured', 'required', 'met'],
                        [[name, 'n/a' if value is None else
                          f'{value}' if isinstance(value, int) else f'{value:.3f}', f'{op} {limit}',
                          'n/a' if value is None else
                          ('yes' if (value >= limit if op == '≥' else value <= limit) else 'NO')]
                         for name, value, op, limit in checks]), '']
    return lines
