"""Stage `aggregate`: the paper's Tables 1-5, Figure 4 and REPORT.md from the per-run results.

Reads results/<profile>/metrics/ and analysis/ (one JSON per run and seed, written by the
evaluate and analyse stages) and sets every reproduced number beside the paper's
(pipeline/paper.yaml). It works on whatever is there: a run with no results yet shows as missing
in its table and in REPORT.md, so a half-finished pipeline still gives a truthful report. A result
file that exists but cannot be read stops everything, naming the file: a silently skipped seed
would bias a mean.

Conventions: reproduced = mean over the seeds found, ± the sample standard deviation (ddof=1; no
spread with one seed); Δ = reproduced mean - paper. A metric that is undefined in a seed (None,
e.g. no rare class in val) is left out of that cell's n.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import yaml

from . import atomic
from . import matrix as mx

PAPER_FILE = Path(__file__).resolve().parent / 'paper.yaml'
TABLES = ('table1', 'table2', 'table3', 'table4', 'table5')
CSV_FIELDS = ('table', 'row', 'label', 'run', 'status', 'metric', 'task', 'coco_metric', 'paper',
              'mean', 'std', 'n', 'n_expected', 'delta')
FIGURE4_FIELDS = ('panel', 'run', 'class_index', 'category_id', 'name', 'frequency',
                  'train_instances', 'mean_score', 'accuracy', 'n_seeds')
FREQUENCY_NAMES = {'r': 'rare', 'c': 'common', 'f': 'frequent'}
FREQUENCY_COLOURS = {'r': '#d62728', 'c': '#2ca02c', 'f': '#7f7f7f'}
# How the non-numeric cells are spelled in each format.
WORDS = {'md': dict(none='—', delta='Δ', pm=' ± ', minus='-', n='n={}'),
         'tex': dict(none='---', delta=r'$\Delta$', pm=r' $\pm$ ', minus='$-$', n='$n={}$')}


def load_yaml(path: Path | str) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f'{path}: cannot read YAML ({err}); restore the file from git') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping at the top level; restore the file from git')
    return data


# ---------------------------------------------------------------------------------------------
# reading results


def read_json(path: Path) -> dict:
    """The file's object; malformed content is an error naming the file and the fix."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f'{path}: malformed JSON ({err}); delete it and re-run the stage that '
                         'writes it') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object; delete it and re-run the stage that '
                         'writes it')
    return data


def _require(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise ValueError(f'{path}: {what}; delete it and re-run the stage that writes it')


def _metric_value(value, path: Path, where: str) -> float | None:
    """A percent AP, or None where LVIS leaves it undefined (None, or the COCO -1 / NaN)."""
    if value is None:
        return None
    _require(isinstance(value, (int, float)) and not isinstance(value, bool), path,
             f'{where} is {value!r}, not a number')
    if math.isnan(value) or value < 0:
        return None
    _require(value <= 100, path, f'{where} = {value} is above 100 (metrics are percent)')
    return float(value)


def load_metrics(path: Path, run: str, seed: int, paper: dict) -> dict:
    data = read_json(path)
    for key in ('run', 'seed', 'bbox', 'segm', 'provenance'):
        _require(key in data, path, f'missing key {key!r}')
    _require(data['run'] == run and data['seed'] == seed, path,
             f'holds run {data["run"]!r} seed {data["seed"]!r}, but its name says run {run!r} '
             f'seed {seed}')
    _require(isinstance(data['provenance'], dict), path, "'provenance' is not an object")
    values = {}
    for column, spec in paper['columns'].items():
        task = data[spec['task']]
        _require(isinstance(task, dict) and spec['metric'] in task, path,
                 f'no {spec["task"]}.{spec["metric"]}')
        values[column] = _metric_value(task[spec['metric']], path,
                                       f'{spec["task"]}.{spec["metric"]}')
    return dict(values=values, provenance=data['provenance'], path=path)


def load_analysis(path: Path, run: str, seed: int) -> dict:
    data = read_json(path)
    _require(data.get('run') == run and data.get('seed') == seed, path,
             f'holds run {data.get("run")!r} seed {data.get("seed")!r}, but its name says run '
             f'{run!r} seed {seed}')
    _require(isinstance(data.get('classes'), list), path, "'classes' is not a list")
    classes = []
    for i, cls in enumerate(data['classes']):
        where = f'classes[{i}]'
        _require(isinstance(cls, dict) and {'id', 'name', 'frequency', 'train_instances',
                                            'mean_score', 'accuracy'} <= set(cls), path,
                 f'{where} lacks one of id, name, frequency, train_instances, mean_score, accuracy')
        _require(cls['frequency'] in FREQUENCY_NAMES, path,
                 f'{where}.frequency is {cls["frequency"]!r}, not r, c or f')
        _require(isinstance(cls['train_instances'], int), path,
                 f'{where}.train_instances is not an integer')
        for key in ('mean_score', 'accuracy'):
            value = cls[key]
            _require(value is None or (isinstance(value, (int, float)) and 0 <= value <= 1),
                     path, f'{where}.{key} is {value!r}, not a number in [0, 1] or null')
        classes.append(cls)
    return dict(classes=classes, path=path)


def _relative(kind: str, profile: str, run: str, seed: int) -> Path:
    """Where a result file sits under results/<profile>/, as the pipeline's matrix module says."""
    where = mx.metrics_path if kind == 'metrics' else mx.analysis_path
    return where(profile, run, seed).relative_to(mx.results_dir(profile))


def collect(profile: str, results_dir: Path, matrix: dict, paper: dict) -> dict:
    """Every run's results per seed, plus the expected files that are not there.

    Metrics are expected for runs that fill a table cell, analyses for Figure 4's runs; other
    runs' metrics (e.g. evaluated pretrain models) are read when present, for the report.
    """
    seeds = matrix['profiles'][profile]['seeds']
    figure_runs = {spec['run'] for spec in matrix['figure4'].values()}
    metrics, analysis, missing = {}, {}, []
    for run, spec in mx.runs(matrix).items():
        metrics[run], analysis[run] = {}, {}
        for seed in seeds:
            path = results_dir / _relative('metrics', profile, run, seed)
            if path.is_file():
                metrics[run][seed] = load_metrics(path, run, seed, paper)
            elif spec['tables']:
                missing.append(dict(kind='metrics', run=run, seed=seed, path=path,
                                    needed_for=', '.join(spec['tables'])))
            path = results_dir / _relative('analysis', profile, run, seed)
            if path.is_file():
                analysis[run][seed] = load_analysis(path, run, seed)
            elif run in figure_runs:
                panels = [p for p, s in matrix['figure4'].items() if s['run'] == run]
                missing.append(dict(kind='analysis', run=run, seed=seed, path=path,
                                    needed_for=', '.join(f'figure4/{p}' for p in panels)))
    return dict(seeds=seeds, metrics=metrics, analysis=analysis, missing=missing)


# ---------------------------------------------------------------------------------------------
# tables


def summarize(values: list[float]) -> dict:
    """mean and sample std (ddof=1) over seeds; std is None for fewer than two seeds."""
    n = len(values)
    if n == 0:
        return dict(mean=None, std=None, n=0)
    arr = np.asarray(values, dtype=float)
    return dict(mean=float(arr.mean()), std=float(arr.std(ddof=1)) if n > 1 else None, n=n)


def cell_runs(matrix: dict, paper: dict) -> dict[str, str]:
    """'table1/loce' -> the run that fills it; a cell missing from paper.yaml is an error."""
    cells = {}
    for run, spec in mx.runs(matrix).items():
        for cell in spec['tables']:
            table, _, row = cell.partition('/')
            if row not in paper['tables'].get(table, {}).get('rows', {}):
                raise ValueError(f'experiments.yaml: run {run!r} fills {cell}, which '
                                 f'{PAPER_FILE.name} does not have; fix the cell name')
            cells[cell] = run
    return cells


def table_rows(table: str, paper: dict, cells: dict, results: dict) -> list[dict]:
    """One record per paper row: its parameters, the run behind it, and per-metric numbers."""
    seeds = results['seeds']
    out = []
    for key, row in paper['tables'][table]['rows'].items():
        run = cells.get(f'{table}/{key}')
        found = results['metrics'].get(run, {}) if run else {}
        status = ('paper-only' if run is None else 'missing' if not found
                  else 'partial' if len(found) < len(seeds) else 'ok')
        metrics = {}
        for column in paper['columns']:
            stats = summarize([m['values'][column] for m in found.values()
                               if m['values'][column] is not None])
            delta = None if stats['mean'] is None else stats['mean'] - row[column]
            metrics[column] = dict(paper=float(row[column]), delta=delta, **stats)
        out.append(dict(key=key, row=row, run=run, status=status, seeds_found=sorted(found),
                        n_expected=len(seeds) if run else 0, metrics=metrics))
    return out


def _param_cell(table: dict, row: dict, param: dict, fmt: str) -> str:
    key = param['key']
    value = row.get(key, table.get('blocks', {}).get(row.get('block'), {}).get(key))
    if 'values' in param:
        return param['values'][str(value)][fmt]
    if param.get('check'):
        return ('✓' if fmt == 'md' else r'\checkmark') if value else ''
    if key == 'method':
        text = value + (f' [{row["ref"]}]' if 'ref' in row else '')
        notes = ''.join(row.get('notes', []))
        if fmt == 'md':
            return text + (f' {notes}' if notes else '')
        tex_notes = notes.replace('†', r'\dagger')
        return _tex_escape(text) + (f'$^{{{tex_notes}}}$' if notes else '')
    return str(value) if fmt == 'md' else _tex_escape(str(value))


def _signed(x: float) -> str:
    return f'{x:+.2f}'


def _repro_cell(stats: dict, row_n: int, fmt: str) -> str:
    words = WORDS[fmt]
    if stats['mean'] is None:
        return 'n/a'
    text = f'{stats["mean"]:.2f}'
    if stats['std'] is not None:
        text += f'{words["pm"]}{stats["std"]:.2f}'
    return text + (f' ({words["n"].format(stats["n"])})' if stats['n'] != row_n else '')


def _delta_cell(delta: float | None, fmt: str) -> str:
    if delta is None:
        return WORDS[fmt]['none']
    return _signed(delta).replace('-', WORDS[fmt]['minus'])


def _lines(table: str, paper: dict, records: list[dict], fmt: str) -> list[list[list[str]]]:
    """Per paper row, its lines: paper numbers, the reproduced numbers, and Δ when there are any.

    Parameter cells are written only on the paper line, so each column reads top to bottom as
    paper / reproduced / Δ for the same setting.
    """
    spec, words = paper['tables'][table], WORDS[fmt]
    columns = list(paper['columns'])
    groups = []
    for rec in records:
        params = [_param_cell(spec, rec['row'], p, fmt) for p in spec['params']]
        blank = [''] * len(params)
        lines = [params + ['paper'] + [f'{rec["row"][c]:.1f}' for c in columns]]
        run = f' `{rec["run"]}`' if fmt == 'md' else ''
        row_n = len(rec['seeds_found'])
        if rec['status'] == 'paper-only':
            lines.append(blank + ['reproduced'] + [words['none']] * len(columns))
        elif rec['status'] == 'missing':
            lines.append(blank + [f'reproduced{run}'] + ['missing'] * len(columns))
        else:
            count = f'{row_n}/{rec["n_expected"]}' if row_n < rec['n_expected'] else f'{row_n}'
            lines.append(blank + [f'reproduced{run} ({words["n"].format(count)})']
                         + [_repro_cell(rec['metrics'][c], row_n, fmt) for c in columns])
            lines.append(blank + [words['delta']]
                         + [_delta_cell(rec['metrics'][c]['delta'], fmt) for c in columns])
        groups.append(lines)
    return groups


def _note(profile: str, results: dict, fmt: str) -> str:
    if fmt == 'md':
        return (f'Profile `{profile}`, seeds {results["seeds"]}. Reproduced: mean ± sample std '
                'over the seeds found (n); Δ = reproduced mean − paper. AP<sup>b</sup> is box AP; '
                'the other columns are mask AP (percent). "missing": no result yet; "—": a row '
                'the paper cites and this suite does not reproduce; "n/a": undefined in every seed.')
    return (f'Profile {_tex_escape(profile)}, seeds {results["seeds"]}. Reproduced: mean $\\pm$ '
            'sample std over the seeds found ($n$); $\\Delta$ = reproduced mean $-$ paper. '
            'AP$^b$ is box AP; the other columns are mask AP (percent). ``missing\'\': no result '
            'yet; ``---\'\': a row the paper cites and this suite does not reproduce; ``n/a\'\': '
            'undefined in every seed.')


def render_md(table: str, paper: dict, records: list[dict], profile: str, results: dict) -> str:
    spec = paper['tables'][table]
    header = [p['md'] for p in spec['params']] + [''] + [c['md'] for c in paper['columns'].values()]
    align = ['---'] * (len(spec['params']) + 1) + ['---:'] * len(paper['columns'])
    lines = [f'## Table {table[-1]}. {spec["caption"]}', '', f'{spec["setting"]}', '',
             _note(profile, results, 'md'), '', '| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(align) + '|']
    for group in _lines(table, paper, records, 'md'):
        lines += ['| ' + ' | '.join(cells) + ' |' for cells in group]
    return '\n'.join(lines) + '\n'


def _tex_escape(text: str) -> str:
    for char, repl in (('\\', r'\textbackslash{}'), ('&', r'\&'), ('%', r'\%'), ('#', r'\#'),
                       ('_', r'\_'), ('{', r'\{'), ('}', r'\}')):
        text = text.replace(char, repl)
    return text


def render_tex(table: str, paper: dict, records: list[dict], profile: str, results: dict) -> str:
    spec = paper['tables'][table]
    n_params = len(spec['params'])
    header = ([p['tex'] for p in spec['params']] + ['']
              + [c['tex'] for c in paper['columns'].values()])
    groups = _lines(table, paper, records, 'tex')
    lines = [f'% Generated by pipeline/aggregate.py (profile {profile}); needs '
             r'\usepackage{booktabs,amssymb}.',
             r'\begin{table}[t]', r'\centering', r'\small',
             r'\begin{tabular}{' + 'l' * (n_params + 1) + 'r' * len(paper['columns']) + '}',
             r'\toprule', ' & '.join(header) + r' \\', r'\midrule']
    blocks = [rec['row'].get('block') for rec in records]
    for i, group in enumerate(groups):
        if i and blocks[i] != blocks[i - 1]:
            lines.append(r'\midrule')
        elif i:
            lines.append(r'\addlinespace')
        lines += [' & '.join(cells) + r' \\' for cells in group]
    caption = f'{spec["caption_tex"]} {_note(profile, results, "tex")}'
    lines += [r'\bottomrule', r'\end{tabular}', r'\caption{' + caption + '}',
              rf'\label{{tab:loce-{table}}}', r'\end{table}']
    return '\n'.join(lines) + '\n'


def _num(x: float | None) -> str:
    return '' if x is None else repr(round(x, 6))


def render_csv(table: str, paper: dict, records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator='\n')
    writer.writeheader()
    for rec in records:
        for column, spec in paper['columns'].items():
            m = rec['metrics'][column]
            writer.writerow(dict(table=table, row=rec['key'], label=rec['row']['label'],
                                 run=rec['run'] or '', status=rec['status'], metric=column,
                                 task=spec['task'], coco_metric=spec['metric'],
                                 paper=_num(m['paper']), mean=_num(m['mean']), std=_num(m['std']),
                                 n=m['n'], n_expected=rec['n_expected'], delta=_num(m['delta'])))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Figure 4


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
        for field in ('mean_score', 'accuracy'):
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
        accuracy = np.array([np.nan if c['accuracy'] is None else c['accuracy'] for c in classes])
        for group, first, last in _frequency_spans(classes):
            ax.axvspan(first - 0.5, last + 0.5, color=FREQUENCY_COLOURS[group], alpha=0.1, lw=0)
        ax.bar(x, scores, width=1.0, linewidth=0, color='tab:blue', alpha=0.8,
               label='mean classification score')
        defined = ~np.isnan(accuracy)  # classes without val GT: skipped, the line bridges them
        many = len(classes) > 100      # full LVIS: a thin line, markers would hide the bars
        ax.plot(x[defined], accuracy[defined], color='tab:orange',
                lw=0.6 if many else 1.0, marker=None if many else 'o', markersize=3,
                label='classification accuracy')
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
                                 mean_score=_num(cls['mean_score']), accuracy=_num(cls['accuracy']),
                                 **{k: cls[k] for k in ('category_id', 'name', 'frequency',
                                                        'train_instances', 'n_seeds')}))
    return buf.getvalue()


def _figure_bytes(fig, fmt: str) -> bytes:
    """PNG or SVG bytes; the SVG keeps text as text and carries no date, so reruns are identical."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({'svg.fonttype': 'none', 'svg.hashsalt': 'loce-figure4'}):
        fig.savefig(buf, format=fmt, dpi=150,
                    metadata={'Date': None} if fmt == 'svg' else {'Software': None})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# REPORT.md


def _seconds(total: float) -> str:
    return f'{total:.0f} s ({total / 3600:.2f} h)'


def _wall(records: dict[int, dict], key: str) -> float | None:
    values = [r['provenance'].get(key) for r in records.values()]
    values = [v for v in values if isinstance(v, (int, float))]
    return float(sum(values)) if values else None


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
            + ['| ' + ' | '.join(r) + ' |' for r in rows])


def _config_cell(matrix: dict, profile: str, spec: dict, found: dict) -> str:
    """The config the matrix names, its overrides, and any other config the results report."""
    expected = str(mx.config_path(matrix, profile, spec['config']).relative_to(mx.ROOT))
    text = f'`{expected}`' + ''.join(f'<br>`{k}={v}`' for k, v in spec['options'].items())
    reported = sorted({str(r['provenance'].get('config')) for r in found.values()} - {expected})
    return text + ''.join(f'<br>results name `{c}`' for c in reported)


def _runs_section(profile: str, matrix: dict, results: dict) -> list[str]:
    rows, train_total, eval_total, n_files = [], 0.0, 0.0, 0
    for run, spec in mx.runs(matrix).items():
        found = results['metrics'][run]
        train, evaluation = _wall(found, 'train_wall_s'), _wall(found, 'eval_wall_s')
        train_total += train or 0.0
        eval_total += evaluation or 0.0
        n_files += len(found)
        analysed = sorted(results['analysis'][run])
        rows.append([f'`{run}`', spec['stage'], _config_cell(matrix, profile, spec, found),
                     ', '.join(map(str, sorted(found))) or '—',
                     ', '.join(map(str, analysed)) or '—', ', '.join(spec['tables']) or '—',
                     '—' if train is None else f'{train:.0f}',
                     '—' if evaluation is None else f'{evaluation:.0f}'])
    return (['## Runs', '', f'Seeds expected per run: {results["seeds"]}. Wall times are sums '
             'over the seeds found, from each result\'s provenance.', '']
            + _md_table(['run', 'stage', 'config and overrides', 'metrics seeds',
                         'analysis seeds', 'tables', 'train wall (s)', 'eval wall (s)'], rows)
            + ['', f'Totals over {n_files} metrics files: training {_seconds(train_total)}, '
               f'evaluation {_seconds(eval_total)}.', ''])


def _environment_section(results: dict) -> list[str]:
    provenance = [r['provenance'] for runs in results['metrics'].values() for r in runs.values()]
    if not provenance:
        return ['## Environment', '', 'No metrics files yet, so no provenance.', '']
    commits = sorted({f'`{p.get("git_commit")}`' + (' (dirty)' if p.get('git_dirty') else '')
                      for p in provenance})
    devices = sorted({str(p.get('device')) for p in provenance})
    packages: dict[str, set] = {}
    for p in provenance:
        for name, version in (p.get('packages') or {}).items():
            packages.setdefault(name, set()).add(str(version))
    created = sorted(str(p['created']) for p in provenance if p.get('created'))
    lines = ['## Environment', '', f'- git commit(s): {", ".join(commits)}',
             f'- device(s): {"; ".join(devices)}']
    if created:
        lines.append(f'- results created: {created[0]} to {created[-1]}')
    lines += ['', *_md_table(['package', 'version(s)'],
                             [[n, ', '.join(sorted(v))] for n, v in sorted(packages.items())]), '']
    return lines


def _missing_section(results: dict, results_dir: Path, ignored: list[Path]) -> list[str]:
    lines = ['## Missing results', '']
    if not results['missing']:
        lines.append('None: every expected metrics and analysis file is present.')
    for m in results['missing']:
        lines.append(f'- `{m["path"].relative_to(results_dir)}` (run `{m["run"]}`, seed '
                     f'{m["seed"]}; needed for {m["needed_for"]})')
    if ignored:
        lines += ['', 'Result files present but not read (no such run or seed in the matrix and '
                  'profile):', '']
        lines += [f'- `{p.relative_to(results_dir)}`' for p in ignored]
    return lines + ['']


def _fmt(x: float | None) -> str:
    return 'n/a' if x is None else _signed(x)


def _best(records: list[dict], field: str) -> str:
    """The rows with the highest mask AP in `field` ('mean' or 'paper'), with that AP."""
    scored = [r for r in records if r['metrics']['AP'][field] is not None]
    if not scored:
        return 'n/a (no results)'
    top = max(r['metrics']['AP'][field] for r in scored)
    keys = [f'`{r["key"]}`' for r in scored if r['metrics']['AP'][field] == top]
    return f'{", ".join(keys)} (AP {top:.{2 if field == "mean" else 1}f})'


def _reading_section(paper: dict, tables: dict, figure: dict) -> list[str]:
    """Numbers computed from the tables and figure data; no judgement is written here."""
    columns = list(paper['columns'])
    lines = ['## Reading (computed)', '',
             'Table 1, each row minus the baseline row, reproduced (paper):', '']
    t1 = {rec['key']: rec for rec in tables['table1']}
    base = t1['baseline']['metrics']
    rows = []
    for key in ('ebl', 'mfs', 'loce', 'prior'):
        cells = []
        for c in columns:
            m = t1[key]['metrics'][c]
            both = m['mean'] is not None and base[c]['mean'] is not None
            diff = m['mean'] - base[c]['mean'] if both else None
            cells.append(f'{_fmt(diff)} ({m["paper"] - base[c]["paper"]:+.1f})')
        rows.append([t1[key]['row']['label']] + cells)
    lines += _md_table(['row − baseline'] + columns, rows)
    lines += ['', 'Tables 2-4, the row(s) with the highest mask AP (ties listed), reproduced '
              'vs paper:', '']
    for table in ('table2', 'table3', 'table4'):
        lines.append(f'- {table}: reproduced {_best(tables[table], "mean")}; '
                     f'paper {_best(tables[table], "paper")}')
    # A run filling several cells (the default LOCE fills one in each table) counts once.
    deltas = {(rec['run'], c): (rec['metrics'][c]['delta'], f'{t}/{rec["key"]} {c}')
              for t in reversed(TABLES) for rec in tables[t] for c in columns
              if rec['metrics'][c]['delta'] is not None}
    deltas = list(deltas.values())
    lines += ['', 'All tables, Δ = reproduced − paper over the (run, metric) pairs with '
              'results:', '']
    if deltas:
        worst = max(deltas, key=lambda d: abs(d[0]))
        lines += [f'- pairs: {len(deltas)}; mean Δ {np.mean([d for d, _ in deltas]):+.2f}; '
                  f'mean |Δ| {np.mean([abs(d) for d, _ in deltas]):.2f}; largest |Δ| '
                  f'{worst[0]:+.2f} ({worst[1]})']
    else:
        lines.append('- no cell has results yet')
    lines += ['', 'Figure 4, mean over the classes of each group (rare / common / frequent):', '']
    rows = []
    for panel, spec in figure.items():
        cells = []
        for field in ('mean_score', 'accuracy'):
            for g in 'rcf':
                values = [c[field] for c in spec['classes']
                          if c['frequency'] == g and c[field] is not None]
                cells.append(f'{np.mean(values):.3f}' if values else 'n/a')
        rows.append([f'({panel}) `{spec["run"]}`'] + cells)
    lines += _md_table(['panel', 'score r', 'score c', 'score f', 'acc. r', 'acc. c', 'acc. f'],
                       rows)
    return lines + ['']


def render_report(profile: str, matrix: dict, paper: dict, results: dict, tables: dict,
                  figure: dict, results_dir: Path, ignored: list[Path]) -> str:
    src = paper['source']
    lines = [f'# LOCE reproduction: profile `{profile}`', '',
             f'Paper: {src["title"]} ({src["venue"]}, arXiv {src["arxiv"]}); its numbers are in '
             f'pipeline/paper.yaml. Data: `{matrix["profiles"][profile]["data"]}`. Generated by '
             'pipeline/aggregate.py from the files under this directory.', '',
             '## Outputs', '']
    for table in TABLES:
        lines.append(f'- Table {table[-1]}: [{table}.md](tables/{table}.md) '
                     f'([csv](tables/{table}.csv), [tex](tables/{table}.tex))')
    lines += ['- Figure 4: [figure4.png](figures/figure4.png) ([svg](figures/figure4.svg), '
              '[csv](figures/figure4.csv))', '', '![Figure 4](figures/figure4.png)', '']
    lines += _runs_section(profile, matrix, results)
    lines += _environment_section(results)
    lines += _missing_section(results, results_dir, ignored)
    lines += _reading_section(paper, tables, figure)
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# entry point


def _ignored_files(results_dir: Path, profile: str, matrix: dict, seeds: list[int]) -> list[Path]:
    expected = {results_dir / _relative(kind, profile, run, seed)
                for kind in ('metrics', 'analysis') for run in mx.runs(matrix) for seed in seeds}
    present = [p for kind in ('metrics', 'analysis') if (results_dir / kind).is_dir()
               for p in (results_dir / kind).rglob('*.json')]
    return sorted(p for p in present if p not in expected)


def aggregate(profile: str, *, results_root: Path | str = 'results', matrix: dict | None = None,
              paper: dict | None = None) -> dict:
    """Write tables/, figures/ and REPORT.md under <results_root>/<profile>/; return a summary.

    The summary has the per-table records, the Figure 4 data, the missing files and the paths
    written.
    """
    matrix = mx.load() if matrix is None else matrix
    paper = load_yaml(PAPER_FILE) if paper is None else paper
    if profile not in matrix['profiles']:
        raise ValueError(f'unknown profile {profile!r}; experiments.yaml has: '
                         f'{", ".join(matrix["profiles"])}')
    results_dir = Path(results_root) / profile
    cells = cell_runs(matrix, paper)
    results = collect(profile, results_dir, matrix, paper)
    tables = {t: table_rows(t, paper, cells, results) for t in TABLES}
    figure = figure4_data(matrix, results)

    # Everything is rendered before the first write, so a failure leaves the old outputs intact.
    outputs = {}
    for table, records in tables.items():
        outputs[f'tables/{table}.md'] = render_md(table, paper, records, profile, results)
        outputs[f'tables/{table}.csv'] = render_csv(table, paper, records)
        outputs[f'tables/{table}.tex'] = render_tex(table, paper, records, profile, results)
    fig = figure4(figure)
    for ext in ('png', 'svg'):
        outputs[f'figures/figure4.{ext}'] = _figure_bytes(fig, ext)
    outputs['figures/figure4.csv'] = figure4_csv(figure)
    ignored = _ignored_files(results_dir, profile, matrix, results['seeds'])
    outputs['REPORT.md'] = render_report(profile, matrix, paper, results, tables, figure,
                                         results_dir, ignored)
    written = [atomic.write_bytes(results_dir / name,
                                  data if isinstance(data, bytes) else data.encode())
               for name, data in outputs.items()]
    return dict(tables=tables, figure4=figure, missing=results['missing'], ignored=ignored,
                written=written)
