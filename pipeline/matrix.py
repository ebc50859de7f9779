"""The experiment matrix (experiments.yaml): loading, validation, and where each run's files live.

Every front end (Snakemake, DVC, the CLI) asks this module for runs and paths, so no path or run
name is spelled twice.
"""
from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
MATRIX_FILE = ROOT / 'pipeline' / 'experiments.yaml'
SCHEMA_FILE = ROOT / 'pipeline' / 'schemas' / 'experiments.schema.yaml'


def load(path: Path | str = MATRIX_FILE) -> dict:
    """Read and validate the matrix; cross-references are checked too."""
    path = Path(path)
    try:
        matrix = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SystemExit(f'{path}: not valid YAML: {err}') from err
    try:
        jsonschema.validate(matrix, yaml.safe_load(SCHEMA_FILE.read_text()))
    except jsonschema.ValidationError as err:
        where = '/'.join(str(p) for p in err.absolute_path) or '(top level)'
        raise SystemExit(f'{path}: {where}: {err.message}') from err
    _check_references(matrix, path)
    return matrix


def _check_references(matrix: dict, path: Path) -> None:
    pretrain, finetune = matrix['pretrain'], matrix['finetune']
    for name in set(pretrain) & set(finetune):
        raise SystemExit(f'{path}: run {name!r} is both a pretrain and a finetune run')
    for name, spec in pretrain.items():
        if spec['dataset'] not in matrix['datasets']:
            raise SystemExit(f'{path}: pretrain/{name}: unknown dataset {spec["dataset"]!r}')
    for name, spec in finetune.items():
        if spec['pretrain'] not in pretrain:
            raise SystemExit(f'{path}: finetune/{name}: unknown pretrain run {spec["pretrain"]!r}')
    cells = [cell for spec in finetune.values() for cell in spec['tables']]
    for cell in {c for c in cells if cells.count(c) > 1}:
        raise SystemExit(f'{path}: table cell {cell} is filled by more than one run')
    for panel, spec in matrix['figure4'].items():
        if spec['run'] not in runs(matrix):
            raise SystemExit(f'{path}: figure4/{panel}: unknown run {spec["run"]!r}')


def runs(matrix: dict) -> dict[str, dict]:
    """All runs, pretrain first, each with its stage, config stem, dataset and parent."""
    out = {}
    for name, spec in matrix['pretrain'].items():
        out[name] = dict(stage='pretrain', config=spec['config'], dataset=spec['dataset'],
                         pretrain=None, options={}, tables=[])
    for name, spec in matrix['finetune'].items():
        parent = matrix['pretrain'][spec['pretrain']]
        out[name] = dict(stage='finetune', config=spec['config'], dataset=parent['dataset'],
                         pretrain=spec['pretrain'], options=spec.get('options', {}),
                         tables=spec['tables'])
    return out


def run_spec(matrix: dict, run: str) -> dict:
    all_runs = runs(matrix)
    if run not in all_runs:
        raise SystemExit(f'unknown run {run!r}; the matrix ({MATRIX_FILE.name}) has: '
                         + ', '.join(all_runs))
    return all_runs[run]


def profile(matrix: dict, name: str) -> dict:
    if name not in matrix['profiles']:
        raise SystemExit(f'unknown profile {name!r}; known: {", ".join(matrix["profiles"])}')
    return matrix['profiles'][name]


def config_path(matrix: dict, profile_name: str, stem: str) -> Path:
    """configs/<stem>.py in full; configs/smoke/<basename>-tiny.py in smoke (ablations too)."""
    prof = profile(matrix, profile_name)
    if profile_name == 'full':
        return ROOT / prof['config_dir'] / f'{stem}{prof["config_suffix"]}.py'
    return ROOT / prof['config_dir'] / f'{Path(stem).name}{prof["config_suffix"]}.py'


def data_root(matrix: dict, profile_name: str, dataset: str) -> Path:
    return ROOT / matrix['datasets'][dataset][profile_name]


def work_dir(profile_name: str, run: str, seed: int) -> Path:
    return ROOT / 'work' / profile_name / run / f'seed{seed}'


def checkpoint(profile_name: str, run: str, seed: int) -> Path:
    """The finished run's weights: written only when training completed."""
    return work_dir(profile_name, run, seed) / 'final.pth'


def results_dir(profile_name: str) -> Path:
    return ROOT / 'results' / profile_name


def metrics_path(profile_name: str, run: str, seed: int) -> Path:
    return results_dir(profile_name) / 'metrics' / run / f'seed{seed}.json'


def analysis_path(profile_name: str, run: str, seed: int) -> Path:
    return results_dir(profile_name) / 'analysis' / run / f'seed{seed}.json'


def analysed_runs(matrix: dict) -> list[str]:
    """Runs whose per-class statistics Figure 4 needs."""
    return sorted({spec['run'] for spec in matrix['figure4'].values()})
