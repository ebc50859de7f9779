"""The mean score through fine-tuning, per frequency group, for Table 1's EBL, MFS and LOCE
rows (seed means): where the warm-up leaves it, and whether the rare classes' scores rise
towards the frequent ones as the paper's equilibrium argument says they should."""
from __future__ import annotations

import csv
import io

import numpy as np

from .figure4 import FREQUENCY_COLOURS, FREQUENCY_NAMES, figure_bytes
from .tables import csv_number

ROWS = {'ebl': 'EBL', 'mfs': 'MFS', 'loce': 'LOCE (EBL + MFS)'}
FORMATS = ('png', 'svg', 'csv')
FIELDS = ('row', 'run', 'iteration', 'group', 'mean_score', 'n_seeds')


def trajectory_data(summary: dict) -> dict[str, dict]:
    """row -> its run, the seeds with a trace, the iterations and the per-group seed means."""
    out = {}
    for row, title in ROWS.items():
        run = summary['cells'].get(f'table1/{row}')
        found = summary['results']['metrics'].get(run, {})
        traces = {s: r['diagnostics']['indicator_trace'] for s, r in sorted(found.items())
                  if 'indicator_trace' in r.get('diagnostics', {})}
        iterations = next(iter(traces.values()))['iterations'] if traces else []
        means = {}
        for group in 'rcf':
            per_seed = [t['mean_score'][group] for t in traces.values()
                        if t['iterations'] == iterations and None not in t['mean_score'][group]]
            means[group] = np.mean(per_seed, axis=0).tolist() if per_seed else []
        out[row] = dict(run=run, title=title, seeds=sorted(traces), iterations=iterations,
                        mean_score=means)
    return out


def figure(data: dict[str, dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.6 * len(data)), layout='constrained')
    axes = fig.subplots(len(data), 1, squeeze=False)[:, 0]
    for ax, (row, spec) in zip(axes, data.items()):
        seeds = ', '.join(map(str, spec['seeds'])) or 'none'
        ax.set_title(f'{spec["title"]} [run {spec["run"]}, seeds: {seeds}]', fontsize=10)
        ax.set_xlabel('fine-tuning iteration')
        ax.set_ylabel('mean score (seed mean)')
        if not spec['iterations']:
            ax.text(0.5, 0.5, 'missing: no indicator trace', transform=ax.transAxes,
                    ha='center', va='center', color='gray')
            continue
        for group in 'rcf':
            if spec['mean_score'][group]:
                ax.plot(spec['iterations'], spec['mean_score'][group],
                        color=FREQUENCY_COLOURS[group], label=f'{FREQUENCY_NAMES[group]} classes')
        ax.legend(fontsize=8, loc='upper left')
    return fig


def to_csv(data: dict[str, dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator='\n')
    writer.writeheader()
    for row, spec in data.items():
        for group in 'rcf':
            for iteration, value in zip(spec['iterations'], spec['mean_score'][group]):
                writer.writerow(dict(row=row, run=spec['run'], iteration=iteration, group=group,
                                     mean_score=csv_number(value), n_seeds=len(spec['seeds'])))
    return buf.getvalue()


def render_all(data: dict[str, dict]) -> dict[str, bytes | str]:
    """figures/indicator_trajectory.<png|svg|csv> -> content."""
    fig = figure(data)
    return {'figures/indicator_trajectory.png': figure_bytes(fig, 'png'),
            'figures/indicator_trajectory.svg': figure_bytes(fig, 'svg'),
            'figures/indicator_trajectory.csv': to_csv(data)}
