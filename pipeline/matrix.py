"""The experiment matrix (experiments.yaml): loading, validation, and where each run's files live.

Every front end (Snakemake, DVC, the CLI) asks this module for runs and paths, so no path or run
name is spelled twice. Paths are absolute under ROOT; `rel` gives the repo-relative form that
goes into resolved configs and provenance, so nothing recorded depends on where a checkout is.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
MATRIX_FILE = ROOT / 'pipeline' / 'experiments.yaml'
SCHEMA_FILE = ROOT / 'pipeline' / 'schemas' / 'experiments.schema.yaml'
PAPER_FILE = ROOT / 'pipeline' / 'paper.yaml'


def load(path: Path | str = MATRIX_FILE) -> dict:
    """Read and validate the matrix; cross-references are checked too."""
    path = Path(path)
    try:
        matrix = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SystemExit(_yaml_error(path, err)) from None
    try:
        jsonschema.validate(matrix, yaml.safe_load(SCHEMA_FILE.read_text()))
    except jsonschema.ValidationError as err:
        where = '/'.join(str(p) for p in err.absolute_path) or '(top level)'
        raise SystemExit(f'{path}: {where}: {err.message}') from err
    _check_references(matrix, path)
    return matrix


def _yaml_error(path: Path, err: Exception) -> str:
    """`FILE:LINE:COLUMN: problem`, as compilers and yamllint say it: PyYAML parsing a string
    names it "<unicode string>", and its message spans several lines."""
    mark = getattr(err, 'problem_mark', None)
    where = f'{path}:{mark.line + 1}:{mark.column + 1}' if mark else str(path)
    what = ': '.join(filter(None, (getattr(err, 'context', None),
                                   getattr(err, 'problem', None)))) or str(err)
    return f'{where}: not valid YAML ({what}); fix it there'


def table_names() -> tuple[str, ...]:
    """The paper's tables, in order: those pipeline/paper.yaml transcribes (the one list every
    table name is checked against)."""
    return _table_names(PAPER_FILE, PAPER_FILE.stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _table_names(path: Path, mtime_ns: int) -> tuple[str, ...]:
    """Parsed once per file version: `load` checks every run's tables (38 ms a parse)."""
    return tuple(yaml.safe_load(path.read_text())['tables'])


def check_tables(names, where: str) -> None:
    """Exit with a message naming `where` if a table name is not one of paper.yaml's."""
    known = table_names()
    for name in names or ():
        if name not in known:
            raise SystemExit(f'{where}: unknown table {name!r}; {PAPER_FILE.name} has: '
                             + ', '.join(known))


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
    for dataset, roots in matrix['datasets'].items():
        for scale in set(matrix['scales']) - set(roots):
            raise SystemExit(f'{path}: datasets/{dataset}: no root for scale {scale!r}')
    for name, spec in [*runs(matrix).items(), *matrix.get('released', {}).items()]:
        check_tables(sorted({c.split('/')[0] for c in spec['tables']}), f'{path}: {name}: tables')
    cells = [cell for spec in runs(matrix).values() for cell in spec['tables']]
    for cell in sorted({c for c in cells if cells.count(c) > 1}):
        raise SystemExit(f'{path}: table cell {cell} is filled by more than one run')
    for run in matrix['analyse']:
        if run not in runs(matrix):
            raise SystemExit(f'{path}: analyse: unknown run {run!r}')
    for panel, spec in matrix['figure4'].items():
        if spec['run'] not in matrix['analyse']:
            raise SystemExit(f'{path}: figure4/{panel}: run {spec["run"]!r} is not in `analyse`')
    for name, spec in matrix['scales'].items():
        if spec.get('rehearses', name) not in matrix['scales']:
            raise SystemExit(f'{path}: scales/{name}/rehearses: unknown scale {spec["rehearses"]!r}')
        check_tables(spec.get('tables'), f'{path}: scales/{name}/tables')
        if 'mirror' in spec and spec['data'] != 'fetch':
            raise SystemExit(f'{path}: scales/{name}: a `mirror` is fetched from (data: fetch)')
        listed = spec.get('runs', list(runs(matrix)))
        for run in listed:
            if run not in runs(matrix):
                raise SystemExit(f'{path}: scales/{name}/runs: unknown run {run!r}')
            parent = runs(matrix)[run]['pretrain']
            if parent and parent not in listed:
                raise SystemExit(f'{path}: scales/{name}/runs: {run!r} needs its pretrain run '
                                 f'{parent!r} in the list')
        for panel, figure in matrix['figure4'].items():
            if figure['run'] not in listed:
                raise SystemExit(f'{path}: scales/{name}/runs: figure4/{panel} needs run '
                                 f'{figure["run"]!r} in the list')


def runs(matrix: dict) -> dict[str, dict]:
    """All runs, pretrain first, each with its stage, config stem, dataset, parent, options,
    table cells, label and (Table 5's baselines) recipe."""
    out = {}
    for name, spec in matrix['pretrain'].items():
        out[name] = dict(stage='pretrain', config=spec['config'], dataset=spec['dataset'],
                         pretrain=None, options=spec.get('options', {}),
                         tables=spec.get('tables', []), label=spec.get('label'),
                         recipe=spec.get('recipe'))
    for name, spec in matrix['finetune'].items():
        parent = matrix['pretrain'][spec['pretrain']]
        out[name] = dict(stage='finetune', config=spec['config'], dataset=parent['dataset'],
                         pretrain=spec['pretrain'], options=spec.get('options', {}),
                         tables=spec['tables'], label=spec.get('label'),
                         recipe=spec.get('recipe'))
    return out


def cells_at(matrix: dict, scale_name: str, run: str) -> list[str]:
    """The table cells a run fills at a scale: those of the tables the scale reproduces."""
    tables = scale(matrix, scale_name).get('tables')
    return [c for c in runs(matrix)[run]['tables'] if tables is None or c.split('/')[0] in tables]


def runs_at(matrix: dict, scale_name: str, only_tables=None) -> dict[str, dict]:
    """The runs a scale runs (its `runs` list, or all), each with its cells at that scale;
    `only_tables` keeps those filling a cell of these tables, their pretrain runs and
    Figure 4's runs (e.g. Tables 1-4 without Table 5's baselines)."""
    listed = scale(matrix, scale_name).get('runs')
    out = {name: dict(spec, tables=cells_at(matrix, scale_name, name))
           for name, spec in runs(matrix).items() if listed is None or name in listed}
    if only_tables:
        keep = {name for name, spec in out.items()
                if any(c.split('/')[0] in only_tables for c in spec['tables'])}
        keep |= {spec['run'] for spec in matrix['figure4'].values()}
        keep |= {out[name]['pretrain'] for name in keep if out[name]['pretrain']}
        out = {name: spec for name, spec in out.items() if name in keep}
    return out


def run_spec(matrix: dict, run: str, scale_name: str | None = None) -> dict:
    """A run's spec; with `scale_name`, it must also be one of that scale's runs."""
    all_runs = runs(matrix)
    if run not in all_runs:
        raise SystemExit(f'unknown run {run!r}; the matrix ({MATRIX_FILE.name}) has: '
                         + ', '.join(all_runs))
    if scale_name is not None and run not in runs_at(matrix, scale_name):
        raise SystemExit(f'run {run!r} is not part of the {scale_name} scale (scales.{scale_name}'
                         f'.runs in {MATRIX_FILE.name}: {", ".join(runs_at(matrix, scale_name))})')
    return all_runs[run]


def scale(matrix: dict, name: str) -> dict:
    if name not in matrix['scales']:
        raise SystemExit(f'unknown scale {name!r}; known: {", ".join(matrix["scales"])}')
    return matrix['scales'][name]


def seeds(matrix: dict, scale_name: str) -> list[int]:
    return scale(matrix, scale_name)['seeds']


def run_seeds(matrix: dict, scale_name: str, run: str) -> list[int]:
    """The seeds a run trains at a scale: all of the scale's, but a stage-1 run that fills no
    table cell trains the first alone where the scale shares its pretraining."""
    spec, seed_list = runs(matrix)[run], seeds(matrix, scale_name)
    shared = scale(matrix, scale_name).get('shared_pretrain', False)
    return seed_list[:1] if shared and spec['stage'] == 'pretrain' and \
        not cells_at(matrix, scale_name, run) else seed_list


def pretrain_seed(matrix: dict, scale_name: str, seed: int) -> int:
    """The seed of the stage-1 checkpoint a fine-tune of `seed` starts from."""
    shared = scale(matrix, scale_name).get('shared_pretrain', False)
    return seeds(matrix, scale_name)[0] if shared else seed


def config_path(matrix: dict, scale_name: str, stem: str) -> Path:
    """configs/<stem>.py: a run's config at every scale (at a scale with a shrink file, the
    resolver shrinks it: pipeline/shrink.py)."""
    scale(matrix, scale_name)
    return ROOT / 'configs' / f'{stem}.py'


def shrink_path(matrix: dict, scale_name: str) -> Path | None:
    """The scale's shrink file, or None where runs use their full configs as they are."""
    name = scale(matrix, scale_name).get('shrink')
    return ROOT / name if name else None


def data_root(matrix: dict, scale_name: str, dataset: str) -> Path:
    return ROOT / matrix['datasets'][dataset][scale_name]


def annotation_file(matrix: dict, scale_name: str, dataset: str, split: str) -> Path:
    """<root>/annotations/<dataset>_<split>.json; split 'train', 'val' or 'finetune' (the
    fine-tune subset of train that a scale with `finetune_images` uses)."""
    name = 'train_finetune' if split == 'finetune' else split
    return data_root(matrix, scale_name, dataset) / 'annotations' / f'{dataset}_{name}.json'


def annotation_files(matrix: dict, scale_name: str, dataset: str) -> list[Path]:
    """The annotation files a dataset's runs read: what its fingerprint is taken over."""
    splits = ('train', 'val', 'finetune') if 'finetune_images' in scale(matrix, scale_name) \
        else ('train', 'val')
    return [annotation_file(matrix, scale_name, dataset, split) for split in splits]


def standins_dir(matrix: dict, scale_name: str) -> Path:
    """Where a scale with a `mirror` keeps its stand-in ImageNet weights and torchvision."""
    return data_root(matrix, scale_name, next(iter(matrix['datasets']))).parent / 'standins'


def mirror_dir(scale_name: str) -> Path:
    """The miniature LVIS mirror a scale with a `mirror` builds and serves (pipeline/data/mirror.py)."""
    return ROOT / 'work' / scale_name / 'mirror'


def rel(path: Path | str) -> str:
    """`path` relative to the checkout, as recorded in configs and provenance (a path outside
    the checkout stays as it is)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def work_dir(scale_name: str, run: str, seed: int) -> Path:
    return ROOT / 'work' / scale_name / run / f'seed{seed}'


def resolved_config(scale_name: str, run: str, seed: int) -> Path:
    """The run's fully resolved config (pipeline.runconfig writes it; every stage reads it)."""
    return ROOT / 'work' / scale_name / 'configs' / run / f'seed{seed}.py'


def checkpoint(scale_name: str, run: str, seed: int) -> Path:
    """The finished run's weights: written only when training completed."""
    return work_dir(scale_name, run, seed) / 'final.pth'


def results_dir(scale_name: str) -> Path:
    """Where a run of the pipeline writes metrics, analyses, tables, figures and REPORT.md."""
    return ROOT / 'work' / scale_name / 'results'


def published_dir(scale_name: str) -> Path:
    """The committed copy of a scale's results (`python -m pipeline publish` writes it)."""
    return ROOT / 'results' / scale_name


def metrics_path(scale_name: str, run: str, seed: int, root: Path | None = None) -> Path:
    return (root or results_dir(scale_name)) / 'metrics' / run / f'seed{seed}.json'


def analysis_path(scale_name: str, run: str, seed: int, root: Path | None = None) -> Path:
    return (root or results_dir(scale_name)) / 'analysis' / run / f'seed{seed}.json'


def analysed_runs(matrix: dict, scale_name: str | None = None) -> list[str]:
    """Runs whose per-class statistics are measured (at a scale: those it runs)."""
    at = runs_at(matrix, scale_name) if scale_name else runs(matrix)
    return [run for run in matrix['analyse'] if run in at]
