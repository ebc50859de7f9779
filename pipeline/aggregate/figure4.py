"""Figure 4: per class, the mean classification score (bars) and accuracy (line) on val, for
the three models the paper shows, plus the numbers behind it as CSV."""
from __future__ import annotations

import csv
import io

import numpy as np

from .tables import csv_number

FORMATS = ('png', 'svg', 'csv')
SCORES = ('mean_score', 'accuracy', 'accuracy_fg')
FIGURE4_FIELDS = ('panel', 'run', 'class_index', 'category_id', 'name', 'frequency',
                  'train_instances', *SCORES, 'n_seeds')
# The two accuracies (loce.evaluation.classification_stats): the detector's own call, where
# background wins a GT box as often as a wrong class does, and the call among the C classes.
ACCURACY_LABELS = {'accuracy': 'accuracy (argmax over C+1, background counts as wrong)',
                   'accuracy_fg': 'accuracy among the C classes (background left out)'}
FREQUENCY_NAMES = {'r': 'rare', 'c': 'common', 'f': 'frequent'}
FREQUENCY_COLOURS = {'r': '#d62728', 'c': '#2ca02c', 'f': '#7f7f7f'}


def combine_seeds(analyses: dict[int, dict]) -> list[dict]:
    """Per class, the seed average of mean score and accuracy, in the paper's x order.

    The x order (training instances, descending; id breaks ties) comes from the training set, so
    every seed must list the same classes with the same counts.
    """
    seeds = sorted(analyses)
    reference = analyses[seeds[0]]
    key = {c['id']: c['train_instances'] for c in reference['classes']}
    for seed in seeds[1:]:
        other = {c['id']: c['train_instances'] for c in analyses[seed]['classes']}
        if other != key:
            raise ValueError(f'{analyses[seed]["path"]}: its classes or training counts differ '
                             f'from {reference["path"]}; re-run the analyse stage for both')
    by_id = {cid: [] for cid in key}
    for seed in seeds:
        for cls in analyses[seed]['classes']:
            by_id[cls['id']].append(cls)
    out = []
    for cls in sorted(reference['classes'], key=lambda c: (-c['train_instances'], c['id'])):
        per_seed = by_id[cls['id']]
        mean = {}
        for field in SCORES:
            values = [c[field] for c in per_seed if c[field] is not None]
            mean[field] = float(np.mean(values)) if values else None
        out.append(dict(category_id=cls['id'], name=cls['name'], frequency=cls['frequency'],
                        train_instances=cls['train_instances'], n_seeds=len(per_seed), **mean))
    return out


def figure4_data(matrix: dict, results: dict) -> dict[str, dict]:
    """panel -> its run, title, seeds and per-class rows (empty when the run has no analysis)."""
    out = {}
    for panel, spec in matrix['figure4'].items():
        analyses = results['analysis'].get(spec['run'], {})
        out[panel] = dict(run=spec['run'], title=spec['title'], seeds=sorted(analyses),
                          classes=combine_seeds(analyses) if analyses else [])
    return out


def _frequency_spans(classes: list[dict]) -> list[tuple[str, int, int]]:
    """Runs of neighbouring classes in one frequency group: (group, first index, last index)."""
    spans = []
    for i, cls in enumerate(classes):
        if spans and spans[-1][0] == cls['frequency']:
            spans[-1] = (cls['frequency'], spans[-1][1], i)
        else:
            spans.append((cls['frequency'], i, i))
    return spans


def figure4(data: dict[str, dict]):
    """The paper's Figure 4: one panel per model, mean score (bars) and accuracy (line) per class.

    Built on matplotlib's Figure directly (rendered through Agg), so no pyplot state or display
    is involved.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(10, 3.2 * len(data)), layout='constrained')
    axes = fig.subplots(len(data), 1, squeeze=False)[:, 0]
    for ax, (panel, spec) in zip(axes, data.items()):
        seeds = ', '.join(str(s) for s in spec['seeds'])
        ax.set_title(f'({panel}) {spec["title"]} [run {spec["run"]}, seeds: {seeds or "none"}]',
                     fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel('score / accuracy')
        ax.set_xlabel('category index (sorted by training instances, descending)')
        classes = spec['classes']
        if not classes:
            ax.text(0.5, 0.5, f'missing: no analysis results for run {spec["run"]}',
                    transform=ax.transAxes, ha='center', va='center', color='gray')
            continue
        x = np.arange(len(classes))
        scores = [np.nan if c['mean_score'] is None else c['mean_score'] for c in classes]
        for group, first, last in _frequency_spans(classes):
            ax.axvspan(first - 0.5, last + 0.5, color=FREQUENCY_COLOURS[group], alpha=0.1, lw=0)
        ax.bar(x, scores, width=1.0, linewidth=0, color='tab:blue', alpha=0.8,
               label='mean classification score')
        many = len(classes) > 100      # full LVIS: a thin line, markers would hide the bars
        for field, colour, style in (('accuracy', 'tab:orange', '-'),
                                     ('accuracy_fg', 'black', '--')):
            values = np.array([np.nan if c[field] is None else c[field] for c in classes])
            defined = ~np.isnan(values)  # classes without val GT: skipped, the line bridges them
            ax.plot(x[defined], values[defined], color=colour, linestyle=style,
                    lw=0.6 if many else 1.0, marker=None if many else 'o', markersize=3,
                    label=ACCURACY_LABELS[field])
        ax.set_xlim(-0.5, len(classes) - 0.5)
        regions = [Patch(color=FREQUENCY_COLOURS[g], alpha=0.25,
                         label=f'{FREQUENCY_NAMES[g]} classes')
                   for g in 'rcf' if any(c['frequency'] == g for c in classes)]
        ax.legend(handles=ax.get_legend_handles_labels()[0] + regions, fontsize=8,
                  loc='upper right', ncols=2)
    return fig


def figure4_csv(data: dict[str, dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIGURE4_FIELDS, lineterminator='\n')
    writer.writeheader()
    for panel, spec in data.items():
        for index, cls in enumerate(spec['classes']):
            writer.writerow(dict(panel=panel, run=spec['run'], class_index=index,
                                 **{k: csv_number(cls[k]) for k in SCORES},
                                 **{k: cls[k] for k in ('category_id', 'name', 'frequency',
                                                        'train_instances', 'n_seeds')}))
    return buf.getvalue()


def figure_bytes(fig, fmt: str) -> bytes:
    """PNG or SVG bytes; the SVG keeps text as text and carries no date, so reruns are identical."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({'svg.fonttype': 'none', 'svg.hashsalt': 'loce-figure4'}):
        fig.savefig(buf, format=fmt, dpi=150,
                    metadata={'Date': None} if fmt == 'svg' else {'Software': None})
    return buf.getvalue()


def render_all(data: dict[str, dict]) -> dict[str, bytes | str]:
    """figures/figure4.<png|svg|csv> -> content, and figure4_<panel>.csv per panel: DVC's plots
    cannot select rows, so a panel is a plot of its own only as a file of its own."""
    fig = figure4(data)
    return {'figures/figure4.png': figure_bytes(fig, 'png'),
            'figures/figure4.svg': figure_bytes(fig, 'svg'),
            'figures/figure4.csv': figure4_csv(data),
            **{f'figures/figure4_{panel}.csv': figure4_csv({panel: spec})
               for panel, spec in data.items()}}
