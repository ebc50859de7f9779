"""Tables 1-5: per paper row, the paper's numbers, the reproduced mean ± std over seeds and Δ,
rendered as Markdown, CSV and LaTeX."""
from __future__ import annotations

import copy
import csv
import io

import numpy as np

from .. import matrix as mx

TABLES = ('table1', 'table2', 'table3', 'table4', 'table5')
FORMATS = ('md', 'csv', 'tex')
CSV_FIELDS = ('table', 'row', 'label', 'run', 'status', 'metric', 'task', 'coco_metric', 'paper',
              'mean', 'std', 'n', 'n_expected', 'delta', 'trains', 'released_name', 'released',
              'released_delta')
# How the non-numeric cells are spelled in each format.
WORDS = {'md': dict(none='—', delta='Δ', pm=' ± ', minus='-', n='n={}'),
         'tex': dict(none='---', delta=r'$\Delta$', pm=r' $\pm$ ', minus='$-$', n='$n={}$')}


def summarize(values: list[float]) -> dict:
    """mean and sample std (ddof=1) over seeds; std is None for fewer than two seeds."""
    n = len(values)
    if n == 0:
        return dict(mean=None, std=None, n=0)
    arr = np.asarray(values, dtype=float)
    return dict(mean=float(arr.mean()), std=float(arr.std(ddof=1)) if n > 1 else None, n=n)


def with_added_rows(matrix: dict, paper: dict) -> dict:
    """paper.yaml plus a row beyond the paper for every matrix cell that names its own `label`
    (a method of yours, added by its matrix entry alone); in Table 5 the cell's middle part
    names the block (table5/r50_v1/<yours>)."""
    paper = copy.deepcopy(paper)
    for run, spec in mx.runs(matrix).items():
        for cell in spec['tables']:
            table, _, row = cell.partition('/')
            rows = paper['tables'].get(table, {}).get('rows')
            if spec['label'] and rows is not None and row not in rows:
                block = row.split('/')[0] if 'blocks' in paper['tables'][table] else None
                rows[row] = dict(label=spec['label'], method=spec['label'], notes=[],
                                 beyond_paper=True, **({'block': block} if block else {}))
    return paper


def cell_runs(matrix: dict, paper: dict) -> dict[str, str]:
    """'table1/loce' -> the run that fills it; a cell missing from paper.yaml is an error."""
    cells = {}
    for run, spec in mx.runs(matrix).items():
        for cell in spec['tables']:
            table, _, row = cell.partition('/')
            if row not in paper['tables'].get(table, {}).get('rows', {}):
                raise ValueError(f'experiments.yaml: run {run!r} fills {cell}, which '
                                 'paper.yaml does not have; fix the cell name, or give the run '
                                 'a `label:` to add it as a row of its own')
            cells[cell] = run
    return cells


def table_rows(table: str, paper: dict, cells: dict, results: dict) -> list[dict]:
    """One record per paper row: its parameters, the run behind it, and per-metric numbers."""
    out = []
    for key, row in paper['tables'][table]['rows'].items():
        run = cells.get(f'{table}/{key}')
        found = results['metrics'].get(run, {}) if run else {}
        seeds = results['run_seeds'][run] if run else []
        status = ('paper-only' if run is None else 'missing' if not found
                  else 'partial' if len(found) < len(seeds) else 'ok')
        metrics = {}
        for column in paper['columns']:
            stats = summarize([m['values'][column] for m in found.values()
                               if m['values'][column] is not None])
            paper_value = row.get(column)  # none in a row beyond the paper
            delta = None if None in (stats['mean'], paper_value) else stats['mean'] - paper_value
            metrics[column] = dict(paper=None if paper_value is None else float(paper_value),
                                   delta=delta, **stats)
        out.append(dict(key=key, row=row, run=run, status=status, seeds_found=sorted(found),
                        n_expected=len(seeds), metrics=metrics))
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
        marks = ','.join(row.get('trains', []))
        if fmt == 'md':
            return (text + (f' {notes}' if notes else '')
                    + (f' <sup>{marks}</sup>' if marks else ''))
        tex_notes = notes.replace('†', r'\dagger')
        return (_tex_escape(text) + (f'$^{{{tex_notes}}}$' if notes else '')
                + (rf'\textsuperscript{{{marks}}}' if marks else ''))
    if value is None:  # a parameter an added row does not have
        return ''
    return str(value) if fmt == 'md' else _tex_escape(str(value))


def signed(x: float) -> str:
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
    return signed(delta).replace('-', WORDS[fmt]['minus'])


def released_cells(summary: dict) -> dict[str, dict]:
    """'table1/loce' -> {name, values, delta} of the authors' released weights evaluated at this
    scale (pipeline/released.py), for the cells their `released` entry names; Δ = released −
    paper, the first check of a reproduction (our evaluation and model on their weights)."""
    from .. import records
    from ..released import metrics_path

    paper, out = summary['paper'], {}
    results_dir = summary.get('results_dir') or mx.results_dir(summary['scale'])
    for name, spec in summary['matrix'].get('released', {}).items():
        path = metrics_path(summary['scale'], name, results_dir)
        for cell in spec['tables'] if path.is_file() else []:
            table, _, row = cell.partition('/')
            if row not in paper['tables'].get(table, {}).get('rows', {}):
                raise ValueError(f'experiments.yaml: released model {name!r} fills {cell}, '
                                 'which paper.yaml does not have; fix the cell name')
            values = records.load_metrics(path, name, None, paper)['values']
            paper_row = paper['tables'][table]['rows'][row]
            delta = {c: None if None in (v, paper_row.get(c)) else v - paper_row[c]
                     for c, v in values.items()}
            out[cell] = dict(name=name, values=values, delta=delta)
    return out


def _released_lines(rec: dict, columns: list[str], blank: list[str], fmt: str) -> list[list]:
    """The released weights' line and its Δ to the paper, between paper and reproduced."""
    rel, words = rec['released'], WORDS[fmt]
    name = f' `{rel["name"]}`' if fmt == 'md' else ''
    values = ['n/a' if rel['values'][c] is None else f'{rel["values"][c]:.2f}' for c in columns]
    return [blank + [f'released weights{name}'] + values,
            blank + [f'{words["delta"]} released'] + [_delta_cell(rel['delta'][c], fmt)
                                                     for c in columns]]


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
        lines = [params + ['paper'] + [words['none'] if rec['row'].get(c) is None
                                       else f'{rec["row"][c]:.1f}' for c in columns]]
        if rec.get('released'):
            lines += _released_lines(rec, columns, blank, fmt)
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
            if not rec['row'].get('beyond_paper'):
                lines.append(blank + [words['delta']]
                             + [_delta_cell(rec['metrics'][c]['delta'], fmt) for c in columns])
        groups.append(lines)
    return groups


def _note(scale: str, results: dict, fmt: str) -> str:
    if fmt == 'md':
        return (f'Scale `{scale}`, seeds {results["seeds"]}. Reproduced: mean ± sample std '
                'over the seeds found (n); Δ = reproduced mean − paper. AP<sup>b</sup> is box AP; '
                'the other columns are mask AP (percent). "missing": no result yet; "—": a row '
                'the paper cites and this suite does not reproduce, or, on a paper line, a row '
                'beyond the paper; "n/a": undefined in every seed.')
    return (f'Scale {_tex_escape(scale)}, seeds {results["seeds"]}. Reproduced: mean $\\pm$ '
            'sample std over the seeds found ($n$); $\\Delta$ = reproduced mean $-$ paper. '
            'AP$^b$ is box AP; the other columns are mask AP (percent). ``missing\'\': no result '
            'yet; ``---\'\': a row the paper cites and this suite does not reproduce, or, on a paper '
            'line, a row beyond the paper; ``n/a\'\': undefined in every seed.')


def _footnotes(spec: dict, fmt: str) -> list[str]:
    """What the marked rows train where their references' recipes differ."""
    if fmt == 'md':
        return [f'<sup>{mark}</sup> {text}' for mark, text in spec.get('footnotes', {}).items()]
    return [rf'\textsuperscript{{{mark}}}{_tex_escape(text)}'
            for mark, text in spec.get('footnotes', {}).items()]


def _trains(spec: dict, row: dict) -> str:
    return ' '.join(f'({mark}) {spec["footnotes"][mark]}' for mark in row.get('trains', []))


def render_md(table: str, paper: dict, records: list[dict], scale: str, results: dict) -> str:
    spec = paper['tables'][table]
    header = [p['md'] for p in spec['params']] + [''] + [c['md'] for c in paper['columns'].values()]
    align = ['---'] * (len(spec['params']) + 1) + ['---:'] * len(paper['columns'])
    lines = [f'## Table {table[-1]}. {spec["caption"]}', '', f'{spec["setting"]}', '',
             _note(scale, results, 'md'), '', '| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(align) + '|']
    for group in _lines(table, paper, records, 'md'):
        lines += ['| ' + ' | '.join(cells) + ' |' for cells in group]
    footnotes = _footnotes(spec, 'md')
    return '\n'.join(lines + ([''] + footnotes if footnotes else [])) + '\n'


def _tex_escape(text: str) -> str:
    for char, repl in (('\\', r'\textbackslash{}'), ('&', r'\&'), ('%', r'\%'), ('#', r'\#'),
                       ('_', r'\_'), ('{', r'\{'), ('}', r'\}')):
        text = text.replace(char, repl)
    return text


def render_tex(table: str, paper: dict, records: list[dict], scale: str, results: dict) -> str:
    spec = paper['tables'][table]
    n_params = len(spec['params'])
    header = ([p['tex'] for p in spec['params']] + ['']
              + [c['tex'] for c in paper['columns'].values()])
    groups = _lines(table, paper, records, 'tex')
    lines = [f'% Generated by pipeline/aggregate (scale {scale}); needs '
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
    caption = ' '.join([spec['caption_tex'], *_footnotes(spec, 'tex'),
                        _note(scale, results, 'tex')])
    lines += [r'\bottomrule', r'\end{tabular}', r'\caption{' + caption + '}',
              rf'\label{{tab:loce-{table}}}', r'\end{table}']
    return '\n'.join(lines) + '\n'


def csv_number(x: float | None) -> str:
    return '' if x is None else repr(round(x, 6))


def render_csv(table: str, paper: dict, records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator='\n')
    writer.writeheader()
    for rec in records:
        trains = _trains(paper['tables'][table], rec['row'])
        for column, spec in paper['columns'].items():
            m = rec['metrics'][column]
            writer.writerow(dict(table=table, row=rec['key'], label=rec['row']['label'],
                                 run=rec['run'] or '', status=rec['status'], metric=column,
                                 task=spec['task'], coco_metric=spec['metric'],
                                 paper=csv_number(m['paper']), mean=csv_number(m['mean']), std=csv_number(m['std']),
                                 n=m['n'], n_expected=rec['n_expected'],
                                 delta=csv_number(m['delta']), trains=trains,
                                 **_released_csv(rec.get('released'), column)))
    return buf.getvalue()


def _released_csv(rel: dict | None, column: str) -> dict:
    if not rel:
        return dict(released_name='', released='', released_delta='')
    return dict(released_name=rel['name'], released=csv_number(rel['values'][column]),
                released_delta=csv_number(rel['delta'][column]))


def render_all(summary: dict) -> dict[str, str]:
    """tables/<table>.<md|csv|tex> -> text, for every table."""
    out, released = {}, released_cells(summary)
    for table, records in summary['tables'].items():
        records = [dict(rec, released=released.get(f'{table}/{rec["key"]}')) for rec in records]
        args = (table, summary['paper'], records)
        out[f'tables/{table}.md'] = render_md(*args, summary['scale'], summary['results'])
        out[f'tables/{table}.csv'] = render_csv(*args)
        out[f'tables/{table}.tex'] = render_tex(*args, summary['scale'], summary['results'])
    return out
