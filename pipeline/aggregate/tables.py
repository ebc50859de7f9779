"""Tables 1-5: per paper row, the paper's numbers, the reproduced mean ± std over seeds and Δ,
rendered as Markdown, CSV and LaTeX.

Δ to the paper is printed only at a scale that declares it approximates the paper
(`compares_with_paper` in experiments.yaml): at a synthetic scale the difference between its
numbers and LVIS ones measures nothing, and printed as a column it would read like a finding.
"""
from __future__ import annotations

import copy
import csv
import io
import json

import numpy as np

from .. import matrix as mx

TABLES = mx.table_names()
FORMATS = ('md', 'csv', 'tex')
CSV_FIELDS = ('table', 'row', 'label', 'run', 'status', 'metric', 'task', 'coco_metric', 'paper',
              'mean', 'std', 'n', 'n_expected', 'delta', 'trains', 'released_name', 'released',
              'released_delta')
# How the non-numeric cells are spelled in each format.
WORDS = {'md': dict(none='—', delta='Δ', pm=' ± ', minus='-', n='n={}'),
         'tex': dict(none='---', delta=r'$\Delta$', pm=r' $\pm$ ', minus='$-$', n='$n={}$')}
# A row the suite reproduces, but not at this scale (its `tables` or `runs`): not "—", which
# says the suite does not reproduce the row at all.
NOT_RUN = 'not run at this scale'
NOT_RUN_CELL = 'not run'


def compares_with_paper(matrix: dict, scale: str) -> bool:
    """Whether the scale approximates the paper, so that Δ = reproduced − paper says something."""
    return bool(mx.scale(matrix, scale).get('compares_with_paper', False))


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


def table_rows(table: str, paper: dict, cells: dict, results: dict,
               matrix_cells: dict | None = None) -> list[dict]:
    """One record per paper row: its parameters, the run behind it, and per-metric numbers.

    `cells` are the scale's; a row with a run in `matrix_cells` (every scale's) but none at this
    scale is 'not-run', told apart from 'paper-only' (no run anywhere in the suite).
    """
    out = []
    for key, row in paper['tables'][table]['rows'].items():
        run = cells.get(f'{table}/{key}')
        found = results['metrics'].get(run, {}) if run else {}
        seeds = results['run_seeds'][run] if run else []
        elsewhere = run is None and f'{table}/{key}' in (matrix_cells or {})
        status = ('not-run' if elsewhere else 'paper-only' if run is None
                  else 'missing' if not found
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


def _lines(table: str, paper: dict, records: list[dict], fmt: str,
           compare: bool, measured: str = 'reproduced') -> list[list[list[str]]]:
    """Per paper row, its lines: paper numbers, the reproduced numbers, and Δ when there are any
    and the scale compares with the paper.

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
            lines.append(blank + [measured] + [words['none']] * len(columns))
        elif rec['status'] == 'not-run':
            lines.append(blank + [measured] + [NOT_RUN_CELL] * len(columns))
        elif rec['status'] == 'missing':
            lines.append(blank + [f'{measured}{run}'] + ['missing'] * len(columns))
        else:
            count = f'{row_n}/{rec["n_expected"]}' if row_n < rec['n_expected'] else f'{row_n}'
            lines.append(blank + [f'{measured}{run} ({words["n"].format(count)})']
                         + [_repro_cell(rec['metrics'][c], row_n, fmt) for c in columns])
            if compare and not rec['row'].get('beyond_paper'):
                lines.append(blank + [words['delta']]
                             + [_delta_cell(rec['metrics'][c]['delta'], fmt) for c in columns])
        groups.append(lines)
    return groups


def rehearsal_note(rehearses: str | None, fmt: str) -> str:
    """What every table and REPORT of a rehearsal scale says first."""
    if not rehearses:
        return ''
    text = (f'REHEARSAL of scale `{rehearses}`: each run a few iterations long, on a miniature '
            'LVIS mirror with stand-in ImageNet weights. Its numbers test that the code paths '
            'run; they say nothing about any method.')
    return f'**{text}** ' if fmt == 'md' else _tex_escape(text.replace('`', '')) + ' '


def _note(scale: str, results: dict, fmt: str, compare: bool) -> str:
    if fmt == 'md':
        delta = ('Δ = reproduced mean − paper' if compare else
                 f'no Δ: scale `{scale}` does not approximate the paper (its data and models are '
                 'not the paper\'s), so the paper line is a reference, not a target')
        return (f'Scale `{scale}`, seeds {results["seeds"]}. Reproduced: mean ± sample std '
                f'over the seeds found (n); {delta}. AP<sup>b</sup> is box AP; '
                'the other columns are mask AP (percent). "missing": no result yet; "—": a row '
                'the paper cites and this suite does not reproduce, or, on a paper line, a row '
                f'beyond the paper; "{NOT_RUN_CELL}": {NOT_RUN} (the suite reproduces the row at '
                'other scales); '
                '"n/a": undefined in every seed.')
    delta = (r'$\Delta$ = reproduced mean $-$ paper' if compare else
             f'no $\\Delta$: scale {_tex_escape(scale)} does not approximate the paper, so the '
             'paper line is a reference, not a target')
    return (f'Scale {_tex_escape(scale)}, seeds {results["seeds"]}. Reproduced: mean $\\pm$ '
            f'sample std over the seeds found ($n$); {delta}. '
            'AP$^b$ is box AP; the other columns are mask AP (percent). ``missing\'\': no result '
            'yet; ``---\'\': a row the paper cites and this suite does not reproduce, or, on a paper '
            f'line, a row beyond the paper; ``{NOT_RUN_CELL}\'\': {NOT_RUN} (the suite reproduces '
            'the row at other scales); ``n/a\'\': undefined in every seed.')


def _footnotes(spec: dict, fmt: str) -> list[str]:
    """What the marked rows train where their references' recipes differ."""
    if fmt == 'md':
        return [f'<sup>{mark}</sup> {text}' for mark, text in spec.get('footnotes', {}).items()]
    return [rf'\textsuperscript{{{mark}}}{_tex_escape(text)}'
            for mark, text in spec.get('footnotes', {}).items()]


def _trains(spec: dict, row: dict) -> str:
    return ' '.join(f'({mark}) {spec["footnotes"][mark]}' for mark in row.get('trains', []))


def _not_run(records: list[dict]) -> bool:
    """The whole table is one the suite reproduces, but not at this scale."""
    return (any(rec['status'] == 'not-run' for rec in records)
            and all(rec['status'] in ('not-run', 'paper-only') for rec in records))


def render_md(table: str, paper: dict, records: list[dict], scale: str, results: dict,
              compare: bool, rehearses: str | None = None) -> str:
    spec = paper['tables'][table]
    header = [p['md'] for p in spec['params']] + [''] + [c['md'] for c in paper['columns'].values()]
    align = ['---'] * (len(spec['params']) + 1) + ['---:'] * len(paper['columns'])
    lines = [f'## Table {table[-1]}. {spec["caption"]}', '', f'{spec["setting"]}', '']
    if _not_run(records):
        lines += [f'**Table {table[-1]} is {NOT_RUN}** (its `tables` and `runs` under '
                  f'`scales.{scale}` in pipeline/experiments.yaml); the paper\'s numbers are '
                  'shown for reference.', '']
    lines += [rehearsal_note(rehearses, 'md') + _note(scale, results, 'md', compare), '',
              '| ' + ' | '.join(header) + ' |', '|' + '|'.join(align) + '|']
    measured = 'rehearsal' if rehearses else 'reproduced'
    for group in _lines(table, paper, records, 'md', compare, measured):
        lines += ['| ' + ' | '.join(cells) + ' |' for cells in group]
    footnotes = _footnotes(spec, 'md')
    return '\n'.join(lines + ([''] + footnotes if footnotes else [])) + '\n'


def _tex_escape(text: str) -> str:
    for char, repl in (('\\', r'\textbackslash{}'), ('&', r'\&'), ('%', r'\%'), ('#', r'\#'),
                       ('_', r'\_'), ('{', r'\{'), ('}', r'\}')):
        text = text.replace(char, repl)
    return text


def render_tex(table: str, paper: dict, records: list[dict], scale: str, results: dict,
               compare: bool, rehearses: str | None = None) -> str:
    spec = paper['tables'][table]
    n_params = len(spec['params'])
    header = ([p['tex'] for p in spec['params']] + ['']
              + [c['tex'] for c in paper['columns'].values()])
    groups = _lines(table, paper, records, 'tex', compare,
                    'rehearsal' if rehearses else 'reproduced')
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
                        rehearsal_note(rehearses, 'tex') + _note(scale, results, 'tex', compare)])
    lines += [r'\bottomrule', r'\end{tabular}', r'\caption{' + caption + '}',
              rf'\label{{tab:loce-{table}}}', r'\end{table}']
    return '\n'.join(lines) + '\n'


def csv_number(x: float | None) -> str:
    return '' if x is None else repr(round(x, 6))


def render_csv(table: str, paper: dict, records: list[dict], compare: bool) -> str:
    """One line per row and metric; `delta` is left empty where the scale does not compare with
    the paper (the released weights' Δ stays: those are LVIS models)."""
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
                                 delta=csv_number(m['delta'] if compare else None),
                                 trains=trains,
                                 **_released_csv(rec.get('released'), column)))
    return buf.getvalue()


def _released_csv(rel: dict | None, column: str) -> dict:
    if not rel:
        return dict(released_name='', released='', released_delta='')
    return dict(released_name=rel['name'], released=csv_number(rel['values'][column]),
                released_delta=csv_number(rel['delta'][column]))


def render_ap(summary: dict) -> dict[str, str]:
    """ap/<run>.json -> the run's AP columns (mean over the seeds found, null where none), for
    `dvc metrics show`: one row per run, the tables' five columns named so that a reader of that
    table alone knows box from mask ("box AP", "mask APr"), and nothing else."""
    names = {c: f'{dict(bbox="box", segm="mask")[spec["task"]]} {spec["metric"]}'
             for c, spec in summary['paper']['columns'].items()}
    out = {}
    for run in mx.runs_at(summary['matrix'], summary['scale']):
        found = summary['results']['metrics'].get(run, {}).values()
        means = {c: summarize([m['values'][c] for m in found if m['values'][c] is not None])['mean']
                 for c in names}
        out[f'ap/{run}.json'] = json.dumps(
            {names[c]: None if v is None else round(v, 6) for c, v in means.items()},
            indent=1) + '\n'
    return out


def render_all(summary: dict) -> dict[str, str]:
    """tables/<table>.<md|csv|tex> -> text, for every table."""
    out, released = {}, released_cells(summary)
    compare = compares_with_paper(summary['matrix'], summary['scale'])
    for table, records in summary['tables'].items():
        records = [dict(rec, released=released.get(f'{table}/{rec["key"]}')) for rec in records]
        args = (table, summary['paper'], records)
        at = (summary['scale'], summary['results'], compare,
              summary['matrix']['scales'][summary['scale']].get('rehearses'))
        out[f'tables/{table}.md'] = render_md(*args, *at)
        out[f'tables/{table}.csv'] = render_csv(*args, compare)
        out[f'tables/{table}.tex'] = render_tex(*args, *at)
    return out
