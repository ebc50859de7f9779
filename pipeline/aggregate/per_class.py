"""Per-class AP: a table of every run's classes, and mask AP against training instances for
Figure 4's runs, where the tail classes' gain (or loss) shows class by class.

Read from the metrics records' per_class section (pipeline/records.py); a record made before it
existed has none and is left out of the seed count. With none at all the table and the CSV keep
only their header and the figure says so: aggregate always writes the same files.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from .figure4 import FREQUENCY_COLOURS, FREQUENCY_NAMES, figure_bytes
from .tables import csv_number

OUTPUTS = ('tables/per_class_ap.csv', 'figures/ap_by_frequency.png',
           'figures/ap_by_frequency.csv')
CLASS_FIELDS = ('category_id', 'name', 'frequency', 'train_instances')
TABLE_FIELDS = ('run', *CLASS_FIELDS, 'bbox_AP', 'segm_AP', 'n_seeds')
FIGURE_FIELDS = ('run', *CLASS_FIELDS, 'segm_AP', 'n_seeds')
MARKERS = 'os^Dv'


def per_class_rows(results: dict) -> list[dict]:
    """One row per run and class (by id): AP in percent, the mean over the seeds whose record
    has per-class AP and where the class's AP is defined; None where it is in none."""
    rows = []
    for run, found in results['metrics'].items():
        seeds = [r for _, r in sorted(found.items()) if r.get('per_class')]
        if not seeds:
            continue
        reference = seeds[0]['per_class']['classes']
        ap = {task: [] for task in ('bbox', 'segm')}
        for record in seeds:
            per_class = record['per_class']
            if per_class['classes'] != reference:
                raise ValueError(f'{record["path"]}: its per-class classes differ from those of '
                                 f'{seeds[0]["path"]}; re-run the evaluate stage for both')
            for task in ap:
                ap[task].append([np.nan if v is None else v for v in per_class[task]])
        means = {task: np.array(values, dtype=float) for task, values in ap.items()}
        for k, cls in enumerate(reference):
            row = dict(run=run, category_id=cls['id'], name=cls['name'],
                       frequency=cls['frequency'], train_instances=cls['train_instances'],
                       n_seeds=len(seeds))
            for task, values in means.items():
                defined = values[:, k][~np.isnan(values[:, k])]
                row[f'{task}_AP'] = float(defined.mean()) if defined.size else None
            rows.append(row)
    return rows


def figure(points: list[dict], runs: list[str]):
    """Mask AP per class against its training instances (log x), one marker per run; the
    bands span each frequency group's training instances. LVIS groups classes by training
    images (rare 1-10, common 11-100, frequent >100), not instances, so the bands may overlap."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), layout='constrained')
    ax = fig.subplots()
    ax.set_xscale('log')
    ax.set_xlabel('training instances of the class')
    ax.set_ylabel('mask AP (%, seed mean)')
    ax.set_title("Mask AP per class by training instances (Figure 4's runs)", fontsize=10)
    if not points:
        ax.text(0.5, 0.5, 'no per-class AP in these records', transform=ax.transAxes,
                ha='center', va='center', color='gray')
        return fig
    for group in 'rcf':
        counts = [p['train_instances'] for p in points if p['frequency'] == group]
        if counts:  # widened a little, so that a group of one count still shows
            ax.axvspan(min(counts) / 1.1, max(counts) * 1.1, color=FREQUENCY_COLOURS[group],
                       alpha=0.12, lw=0, label=f'{FREQUENCY_NAMES[group]} classes')
    for run, marker in zip(runs, MARKERS):
        mine = [p for p in points if p['run'] == run]
        if mine:
            ax.scatter([p['train_instances'] for p in mine], [p['segm_AP'] for p in mine],
                       s=14, marker=marker, alpha=0.7,
                       label=f'{run} ({mine[0]["n_seeds"]} seed(s))')
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    return fig


def to_csv(rows: list[dict], fields: tuple) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator='\n', extrasaction='ignore')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_number(v) if k.endswith('_AP') else v for k, v in row.items()})
    return buf.getvalue()


def render_all(summary: dict) -> dict[str, bytes | str]:
    """OUTPUTS -> content. The figure leaves out classes without a defined mask AP and
    classes with no training instance (no place on a log axis)."""
    rows = per_class_rows(summary['results'])
    runs = list(dict.fromkeys(spec['run'] for spec in summary['matrix']['figure4'].values()))
    points = [r for r in rows if r['run'] in runs and r['segm_AP'] is not None
              and r['train_instances'] > 0]
    return {'tables/per_class_ap.csv': to_csv(rows, TABLE_FIELDS),
            'figures/ap_by_frequency.png': figure_bytes(figure(points, runs), 'png'),
            'figures/ap_by_frequency.csv': to_csv(points, FIGURE_FIELDS)}
