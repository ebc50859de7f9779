"""Stage `aggregate`: the paper's Tables 1-5, Figure 4 and REPORT.md from the per-run results,
and per-class AP (tables/per_class_ap.csv, figures/ap_by_frequency.png) beside them.

Reads <results>/metrics/ and analysis/ (one record per run and seed, pipeline/records.py) and
sets every reproduced number beside the paper's (pipeline/paper.yaml). It works on whatever is
there: a run with no results yet shows as missing in its table and in REPORT.md, so a
half-finished pipeline still gives a truthful report. A result made under another config than
the run's resolved config now, or under other training code, is stale and counts as missing,
never as a number. A result file
that exists but cannot be read stops everything, naming the file: a silently skipped seed would
bias a mean.

Conventions: reproduced = mean over the seeds found, ± the sample standard deviation (ddof=1; no
spread with one seed); Δ = reproduced mean - paper. A metric that is undefined in a seed (None,
e.g. no rare class in val) is left out of that cell's n.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .. import atomic, records
from .. import matrix as mx
from ..runconfig import written_sha256
from . import figure4, loss_curves, per_class, report, tables, trajectory

PAPER_FILE = mx.PAPER_FILE
KINDS = {'metrics': mx.metrics_path, 'analysis': mx.analysis_path}


def outputs(scale: str, matrix: dict | None = None) -> list[str]:
    """The files aggregate writes, relative to a scale's results dir (both front ends list
    these: the Snakefile through this function, dvc.yaml as their folders, checked by a test).

    Beside the tables and figures, two views for DVC, whose `metrics show` makes one row per file
    and whose plots cannot filter rows: ap/<run>.json (the tables' AP columns per run of the
    scale, provenance left in metrics/) and one Figure 4 CSV per panel.
    """
    matrix = mx.load() if matrix is None else matrix
    return ([f'tables/{t}.{ext}' for t in tables.TABLES for ext in tables.FORMATS]
            + [f'figures/figure4.{ext}' for ext in figure4.FORMATS]
            + [f'figures/figure4_{panel}.csv' for panel in matrix['figure4']]
            + [f'figures/indicator_trajectory.{ext}' for ext in trajectory.FORMATS]
            + list(per_class.OUTPUTS) + list(loss_curves.OUTPUTS)
            + [f'ap/{run}.json' for run in mx.runs_at(matrix, scale)] + ['REPORT.md'])


def load_yaml(path: Path | str) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f'{path}: cannot read YAML ({err}); restore the file from git') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping at the top level; restore the file from git')
    return data


def current_identity(scale: str):
    """(run, seed) -> what a result of it must have been made under now: the hash of the run's
    resolved config as written, and of the training code (None where unknown)."""
    from ..provenance import code_sha256
    code = code_sha256('train')
    return lambda run, seed: dict(config_sha256=written_sha256(mx.resolved_config(scale, run, seed)),
                                  code_sha256=code)


def _stale(record: dict, now: dict) -> str | None:
    """Why a result no longer stands for its run (another config, or training code), or None."""
    made = dict(record['provenance'].get('identity') or {},
                config_sha256=record['provenance'].get('config_sha256'))
    for key, what in (('config_sha256', 'config'), ('code_sha256', 'training code')):
        if now.get(key) is not None and made.get(key) is not None and made[key] != now[key]:
            return f'stale: made under {what} {made[key][:12]}, now {now[key][:12]}'
    return None


def collect(scale: str, results_dir: Path, matrix: dict, paper: dict, current=None) -> dict:
    """Every run's results per seed, plus the expected files that are not there (or are stale).

    Metrics are expected for runs that fill a table cell, analyses for Figure 4's runs; other
    runs' metrics (e.g. evaluated pretrain models) are read when present, for the report.
    `current(run, seed)` gives what the run is made under now (current_identity); a result
    made under another config or training code is stale.
    """
    seeds = mx.seeds(matrix, scale)
    run_seeds = {run: mx.run_seeds(matrix, scale, run) for run in mx.runs_at(matrix, scale)}
    analysed = set(mx.analysed_runs(matrix, scale))
    found = {'metrics': {}, 'analysis': {}}
    missing = []
    for run, spec in mx.runs_at(matrix, scale).items():
        needed = {'metrics': ', '.join(spec['tables']),
                  'analysis': (', '.join(f'figure4/{p}' for p, s in matrix['figure4'].items()
                                         if s['run'] == run) or 'per-class accuracy')
                  if run in analysed else ''}
        for kind, where in KINDS.items():
            found[kind][run] = {}
            for seed in run_seeds[run]:
                path = where(scale, run, seed, results_dir)
                record, stale = None, None
                if path.is_file():
                    record = (records.load_metrics(path, run, seed, paper) if kind == 'metrics'
                              else records.load_analysis(path, run, seed))
                    stale = _stale(record, current(run, seed)) if current else None
                    if stale:
                        record = None
                if record is not None:
                    found[kind][run][seed] = record
                elif needed[kind] or stale:
                    missing.append(dict(kind=kind, run=run, seed=seed, path=path,
                                        needed_for=needed[kind] or '—', stale=stale))
    return dict(seeds=seeds, run_seeds=run_seeds, metrics=found['metrics'],
                analysis=found['analysis'], missing=missing)


def collect_missing(scale: str, results_dir: Path) -> list[str]:
    """The expected result files absent or stale under `results_dir`, as readable strings."""
    matrix = mx.load()
    paper = tables.with_added_rows(matrix, load_yaml(PAPER_FILE))
    results = collect(scale, results_dir, matrix, paper, current_identity(scale))
    return [f'{mx.rel(m["path"])}' + (f' ({m["stale"]})' if m['stale'] else '')
            for m in results['missing']]


def ignored_files(results_dir: Path, scale: str, matrix: dict) -> list[Path]:
    expected = {where(scale, run, seed, results_dir) for where in KINDS.values()
                for run in mx.runs_at(matrix, scale) for seed in mx.run_seeds(matrix, scale, run)}
    present = [p for kind in KINDS if (results_dir / kind).is_dir()
               for p in (results_dir / kind).rglob('*.json')]
    return sorted(p for p in present if p not in expected)


def aggregate(scale: str, *, results_dir: Path | str | None = None, matrix: dict | None = None,
              paper: dict | None = None, check_configs: bool = True) -> dict:
    """Write tables/, figures/ and REPORT.md under the scale's results dir; return a summary.

    The summary has the per-table records, the Figure 4 data, the missing files and the paths
    written. check_configs: count results made under another config than the run's resolved
    config as stale.
    """
    matrix = mx.load() if matrix is None else matrix
    paper = tables.with_added_rows(matrix, load_yaml(PAPER_FILE) if paper is None else paper)
    if scale not in matrix['scales']:
        raise ValueError(f'unknown scale {scale!r}; experiments.yaml has: '
                         f'{", ".join(matrix["scales"])}')
    results_dir = Path(results_dir) if results_dir else mx.results_dir(scale)
    results = collect(scale, results_dir, matrix, paper,
                      current_identity(scale) if check_configs else None)
    summary = dict(scale=scale, matrix=matrix, paper=paper, results=results,
                   results_dir=results_dir,
                   ignored=ignored_files(results_dir, scale, matrix))
    every_cell = tables.cell_runs(matrix, paper)  # every cell of the matrix is one of the paper's
    cells = {c: r for r, spec in mx.runs_at(matrix, scale).items() for c in spec['tables']}
    summary['cells'] = cells
    summary['tables'] = {t: tables.table_rows(t, paper, cells, results, every_cell)
                         for t in tables.TABLES}
    summary['figure4'] = figure4.figure4_data(matrix, results)
    summary['trajectory'] = trajectory.trajectory_data(summary)

    # Everything is rendered before the first write, so a failure leaves the old outputs intact.
    rendered = {**tables.render_all(summary), **tables.render_ap(summary),
                **figure4.render_all(summary['figure4']),
                **trajectory.render_all(summary['trajectory']), **per_class.render_all(summary),
                **loss_curves.render_all(summary),
                'REPORT.md': report.render_report(summary)}
    assert sorted(rendered) == sorted(outputs(scale, matrix)), 'aggregate.outputs() is out of date'
    written = [atomic.write_bytes(results_dir / name,
                                  data if isinstance(data, bytes) else data.encode())
               for name, data in rendered.items()]
    return dict(tables=summary['tables'], figure4=summary['figure4'], missing=results['missing'],
                ignored=summary['ignored'], written=written)
