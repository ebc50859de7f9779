"""The total training loss against iteration, one panel per run and a line per seed: a run that
diverged, stalled or was cut short shows here before its AP puzzles anyone.

Read from the metrics records' diagnostics (pipeline/evaluate.py takes them from the run's
mmengine scalars, pipeline/train.py loss_curve); records without one are left out, and with
none at all the figure says so: aggregate always writes the same files.
"""
from __future__ import annotations

from .figure4 import figure_bytes

OUTPUTS = ('figures/loss_curves.png',)
COLUMNS = 4


def curves(summary: dict) -> dict[str, dict[int, dict]]:
    """run -> seed -> its loss curve, for the runs with at least one."""
    out = {}
    for run, found in summary['results']['metrics'].items():
        seeds = {seed: record['diagnostics']['loss_curve'] for seed, record in sorted(found.items())
                 if 'loss_curve' in record.get('diagnostics', {})}
        if seeds:
            out[run] = seeds
    return out


def figure(data: dict[str, dict[int, dict]]):
    from matplotlib.figure import Figure

    rows = max(1, -(-len(data) // COLUMNS))
    fig = Figure(figsize=(3.2 * COLUMNS, 2.4 * rows), layout='constrained')
    axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel()
    for ax in axes[len(data):]:
        ax.set_axis_off()
    if not data:
        fig.text(0.5, 0.5, 'missing: no loss curve in the metrics records', ha='center',
                 va='center', color='gray')
    for ax, (run, seeds) in zip(axes, data.items()):
        ax.set_title(run, fontsize=9)
        ax.set_xlabel('iteration', fontsize=8)
        ax.set_ylabel('loss', fontsize=8)
        ax.tick_params(labelsize=7)
        for seed, curve in seeds.items():
            ax.plot(curve['iterations'], curve['loss'], linewidth=1, label=f'seed {seed}')
        ax.legend(fontsize=7)
    return fig


def render_all(summary: dict) -> dict[str, bytes]:
    """figures/loss_curves.png -> content."""
    return {OUTPUTS[0]: figure_bytes(figure(curves(summary)), 'png')}
