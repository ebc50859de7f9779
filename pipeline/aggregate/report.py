"""REPORT.md: what ran (runs, configs, wall times), where (environment, CPU kernel path), what is
missing or stale, and a computed reading of the tables and Figure 4."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import matrix as mx
from . import claims
from .figure4 import combine_seeds
from .tables import NOT_RUN, TABLES, compares_with_paper, rehearsal_note, signed


def _seconds(total: float) -> str:
    return f'{total:.0f} s ({total / 3600:.2f} h)'


def _wall(records: dict[int, dict], key: str) -> float | None:
    values = [r['provenance'].get(key) for r in records.values()]
    values = [v for v in values if isinstance(v, (int, float))]
    return float(sum(values)) if values else None


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
            + ['| ' + ' | '.join(r) + ' |' for r in rows])


def _config_cell(matrix: dict, scale: str, spec: dict, found: dict) -> str:
    """The config the matrix names, its overrides, and any other config the results report."""
    expected = mx.rel(mx.config_path(matrix, scale, spec['config']))
    text = f'`{expected}`' + ''.join(f'<br>`{k}={v}`' for k, v in spec['options'].items())
    reported = sorted({str(r['provenance'].get('config')) for r in found.values()} - {expected})
    return text + ''.join(f'<br>results name `{c}`' for c in reported)


def _runs_section(scale: str, matrix: dict, results: dict) -> list[str]:
    rows, train_total, eval_total, n_files = [], 0.0, 0.0, 0
    for run, spec in mx.runs_at(matrix, scale).items():
        found = results['metrics'][run]
        train, evaluation = _wall(found, 'train_wall_s'), _wall(found, 'eval_wall_s')
        train_total += train or 0.0
        eval_total += evaluation or 0.0
        n_files += len(found)
        analysed = sorted(results['analysis'][run])
        rows.append([f'`{run}`', spec['stage'], _config_cell(matrix, scale, spec, found),
                     ', '.join(map(str, sorted(found))) or '—',
                     ', '.join(map(str, analysed)) or '—', ', '.join(spec['tables']) or '—',
                     '—' if train is None else f'{train:.0f}',
                     '—' if evaluation is None else f'{evaluation:.0f}'])
    shared = [run for run, seeds in results['run_seeds'].items() if seeds != results['seeds']]
    note = (f' Stage-1 runs filling no table cell ({", ".join(f"`{r}`" for r in shared)}) train '
            f'seed {results["seeds"][0]} alone, and every fine-tune seed starts from it.'
            if shared else '')
    shrink = mx.shrink_path(matrix, scale)
    shrunk = (f' Every config runs shrunk by `{mx.rel(shrink)}` at this scale.' if shrink else '')
    return (['## Runs', '', f'Seeds expected per run: {results["seeds"]}.{note}{shrunk} Wall times '
             'are sums over the seeds found, from each result\'s provenance.', '']
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
    cpus = sorted({_cpu_line(p.get('cpu')) for p in provenance})
    packages: dict[str, set] = {}
    for p in provenance:
        for name, version in (p.get('packages') or {}).items():
            packages.setdefault(name, set()).add(str(version))
    created = sorted(str(p['created']) for p in provenance if p.get('created'))
    lines = ['## Environment', '', f'- git commit(s): {", ".join(commits)}',
             f'- device(s): {"; ".join(devices)}',
             f'- CPU kernel path: {"; ".join(cpus)}']
    if created:
        lines.append(f'- results created: {created[0]} to {created[-1]}')
    lines += ['', *_md_table(['package', 'version(s)'],
                             [[n, ', '.join(sorted(v))] for n, v in sorted(packages.items())]), '']
    return lines


def _cpu_line(cpu: dict | None) -> str:
    if not cpu:
        return 'not recorded'
    path = (f'pinned to {cpu["cpu_capability"]}' if cpu.get('isa_pinned')
            else f'{cpu.get("cpu_capability")}, not pinned'
            + (f' ({cpu["isa_pin_blocker"]})' if cpu.get('isa_pin_blocker') else ''))
    return f'{cpu.get("cpu_model")}: {path}, {cpu.get("threads")} thread(s)'


def _missing_section(results: dict, results_dir: Path, ignored: list[Path]) -> list[str]:
    lines = ['## Missing results', '']
    if not results['missing']:
        lines.append('None: every expected metrics and analysis file is present.')
    for m in results['missing']:
        lines.append(f'- `{m["path"].relative_to(results_dir)}` (run `{m["run"]}`, seed '
                     f'{m["seed"]}; needed for {m["needed_for"]})'
                     + (f' {m["stale"]}' if m.get('stale') else ''))
    if ignored:
        lines += ['', 'Result files present but not read (no such run or seed in the matrix and '
                  'scale):', '']
        lines += [f'- `{p.relative_to(results_dir)}`' for p in ignored]
    return lines + ['']


def _fmt(x: float | None) -> str:
    return 'n/a' if x is None else signed(x)


def _best(records: list[dict], field: str) -> str:
    """The rows with the highest mask AP in `field` ('mean' or 'paper'), with that AP."""
    scored = [r for r in records if r['metrics']['AP'][field] is not None]
    if not scored:
        return 'n/a (no results)'
    top = max(r['metrics']['AP'][field] for r in scored)
    keys = [f'`{r["key"]}`' for r in scored if r['metrics']['AP'][field] == top]
    return f'{", ".join(keys)} (AP {top:.{2 if field == "mean" else 1}f})'


def _reading_section(paper: dict, tables: dict, scale: str, compare: bool,
                     measured: str = 'reproduced') -> list[str]:
    """Numbers computed from the tables and figure data; no judgement is written here. The
    differences to the paper only where the scale approximates it: elsewhere they would read
    as findings about numbers that measure another dataset. `measured` names what the numbers
    are ('rehearsal' on a rehearsal, as in its tables)."""
    columns = list(paper['columns'])
    lines = ['## Reading (computed)', '',
             f'Table 1, each row minus the baseline row, {measured} (paper):', '']
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
    lines += ['', f'Tables 2-4, the row(s) with the highest mask AP (ties listed), {measured} '
              'vs paper:', '']
    for table in ('table2', 'table3', 'table4'):
        ran = any(rec['run'] for rec in tables[table])  # a row with a run at this scale
        lines.append(f'- {table}: '
                     f'{measured + " " + _best(tables[table], "mean") if ran else NOT_RUN}; '
                     f'paper {_best(tables[table], "paper")}')
    if not compare:
        return lines + ['', f'No Δ = reproduced − paper is summed up: scale `{scale}` does not '
                        'approximate the paper (only a scale with `compares_with_paper: true` '
                        'in pipeline/experiments.yaml does), so its numbers and the paper\'s '
                        'measure different data.', '']
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
    return lines + ['']


def _per_class_section(summary: dict) -> list[str]:
    """Per-class statistics of every analysed run, averaged within each frequency group (seed
    means): the stage-1 model (before fine-tuning) beside each fine-tuned one (after)."""
    rows = []
    for run in mx.analysed_runs(summary['matrix'], summary['scale']):
        analyses = summary['results']['analysis'].get(run, {})
        classes = combine_seeds(analyses) if analyses else []
        cells = []
        for field in ('mean_score', 'accuracy', 'accuracy_fg'):
            for g in 'rcf':
                values = [c[field] for c in classes if c['frequency'] == g and c[field] is not None]
                cells.append(f'{np.mean(values):.3f}' if values else 'n/a')
        stage = mx.runs(summary['matrix'])[run]['stage']
        rows.append([f'`{run}` ({"before" if stage == "pretrain" else "after"} fine-tuning, '
                     f'seeds {sorted(analyses) or "none"})'] + cells)
    return (['## Per-class statistics before and after fine-tuning', '',
             'Mean over the classes of each group (rare / common / frequent) of the val GT boxes\' '
             'mean score and accuracy (Figure 4\'s runs among them):', '',
             *_md_table(['run', 'score r', 'score c', 'score f', 'acc. r', 'acc. c', 'acc. f',
                         'fg acc. r', 'fg acc. c', 'fg acc. f'], rows), '',
             'acc.: the GT box\'s argmax over all C+1 logits is its class (background counts as '
             'wrong, as the detector scores it); fg acc.: its argmax over the C foreground logits '
             'is its class. The paper does not say which it plots. The per-class values are in '
             'analysis/ and, for Figure 4\'s runs, figures/figure4.csv.', ''])


def _substitutions(matrix: dict, scale: str) -> list[str]:
    """What a rehearsal changes from the scale it rehearses, read off the matrix (so the list
    cannot drift from what ran)."""
    spec = matrix['scales'][scale]
    of = matrix['scales'][spec['rehearses']]
    lines = [f'## What this rehearsal substitutes for scale `{spec["rehearses"]}`', '',
             'Everything not listed runs as at that scale: its configs '
             '(`configs/`), its DAG (Snakefile, rules), its stage commands and '
             'launcher, LVIS\'s shapes (1,203 / 1,230 classes, multi-scale 1333 x 800 inputs, '
             '512 RoIs per image, the MFS memory at its configured size), FastLVISMetric at '
             'every class, the analysis and the aggregate.', '']
    if 'mirror' in spec:
        m = spec['mirror']
        lines += [f'1. **Data**: a miniature LVIS v1 / v0.5 with COCO 2017 images '
                  f'({m.get("num_train", 8)} train and {m.get("num_val", 4)} val images per '
                  f'version; seed {m.get("seed", 0)}): real category names, ids and frequency-'
                  'group sizes, federated labels and polygons, random pixels and objects, packed '
                  'as the real archives (pipeline/data/mirror.py). The data stage serves it on '
                  '127.0.0.1 and fetches it with pipeline/data/fetch.py (download, checksum '
                  'against the mirror\'s own lock file, unpack, layout).',
                  '2. **ImageNet weights**: random stand-ins in torch hub\'s cache with '
                  'torchvision\'s ResNet-50/101 keys (pipeline/data/hub_standin.py), so '
                  '`torchvision://resnet50` resolves offline through mmengine\'s own loading '
                  'code; where torchvision itself does not import (this CPU build of torch), '
                  'a stand-in package with only its version and mmengine\'s URL table.']
    if 'length' in spec:
        n = spec['length']
        lines.append(f'3. **Length**: epoch-based runs train {n["epochs"]} epoch(s), '
                     f'iteration-based ones {n["iterations"]} iteration(s), and MFS\'s warm-up '
                     f'pass takes {n["warmup_images"]} images per process; each resolved config '
                     'records it (`shortened`, `train_cfg`, `MemoryWarmupHook.max_images`).')
    processes = spec.get('processes', 1)
    lines.append(f'4. **Processes**: {processes} training process(es) per run under torchrun '
                 f'with gloo on CPU, through the same train rule and launcher as the '
                 f'{of["gpus"]} GPU(s) per run at `{spec["rehearses"]}`; evaluation and analysis '
                 'in one process (as on one GPU there).')
    lines.append(f'5. **Runs and seeds**: seeds {spec["seeds"]} (`{spec["rehearses"]}`: '
                 f'{of["seeds"]}); runs: ' + (', '.join(f'`{r}`' for r in spec['runs'])
                                               if 'runs' in spec else 'all of the matrix') + '.')
    return lines


def render_report(summary: dict) -> str:
    scale, matrix, paper = summary['scale'], summary['matrix'], summary['paper']
    results, src = summary['results'], paper['source']
    lines = [f'# LOCE reproduction: scale `{scale}`', '',
             f'Paper: {src["title"]} ({src["venue"]}, arXiv {src["arxiv"]}); its numbers are in '
             f'pipeline/paper.yaml. Data: `{matrix["scales"][scale]["data"]}`. Generated by '
             'pipeline/aggregate from the files under this directory.', '']
    rehearses = matrix['scales'][scale].get('rehearses')
    if rehearses:
        lines += [rehearsal_note(rehearses, 'md'), '', *_substitutions(matrix, scale), '']
    lines += ['## Outputs', '']
    for table in TABLES:
        lines.append(f'- Table {table[-1]}: [{table}.md](tables/{table}.md) '
                     f'([csv](tables/{table}.csv), [tex](tables/{table}.tex))')
    lines += ['- Figure 4: [figure4.png](figures/figure4.png) ([svg](figures/figure4.svg), '
              '[csv](figures/figure4.csv))',
              '- AP per run, the tables\' five columns (what `dvc metrics show` lists): ap/<run>.json',
              '- AP per class and run: tables/per_class_ap.csv; mask AP by training instances: '
              '[ap_by_frequency.png](figures/ap_by_frequency.png) '
              '([csv](figures/ap_by_frequency.csv))',
              '', '![Figure 4](figures/figure4.png)', '']
    lines += claims.criteria_section(summary)
    lines += claims.section(summary)
    lines += _runs_section(scale, matrix, results)
    lines += _environment_section(results)
    lines += _missing_section(results, summary['results_dir'], summary['ignored'])
    lines += _reading_section(paper, summary['tables'], scale, compares_with_paper(matrix, scale),
                              'rehearsal' if rehearses else 'reproduced')
    lines += _per_class_section(summary)
    return '\n'.join(lines)
