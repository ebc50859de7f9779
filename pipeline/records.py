"""The two records the pipeline writes per run and seed, in one place: metrics (evaluate) and
per-class analysis (analyse). Each is built, validated, written and read here, so the writer,
the aggregate's reader and the tests share one schema.

metrics:  {run, seed, scale, dataset, bbox: {AP, AP50, ...}, segm: {...}, provenance,
          diagnostics (optional: the indicator's trajectory, pipeline/evaluate.py),
          per_class (optional: {classes: [{id, name, frequency, train_instances}, ...],
          bbox: [AP, ...], segm: [AP, ...]}, the AP lists aligned with classes, by id)}, AP in
          percent, None where LVIS leaves a value undefined (no GT in a group or class).
          per_class carries the class facts so that it plots without the annotation file;
          records written before it existed have none.
analysis: {run, seed, scale, classes: [{id, name, frequency, train_instances, val_instances,
          mean_score, accuracy, accuracy_fg}, ...], provenance}, scores and accuracies in
          [0, 1] or None (loce.evaluation.classification_stats says what each one is).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import atomic

TASKS = ('bbox', 'segm')
PER_CLASS_FIELDS = ('id', 'name', 'frequency', 'train_instances')
CLASS_FIELDS = ('id', 'name', 'frequency', 'train_instances', 'val_instances', 'mean_score',
                'accuracy', 'accuracy_fg')
SCORE_FIELDS = ('mean_score', 'accuracy', 'accuracy_fg')
FREQUENCIES = ('r', 'c', 'f')


class RecordError(ValueError):
    """A metrics or analysis file that cannot be used; its message names the file and the fix,
    so the CLI prints it alone (pipeline/cli.py), without a traceback."""


def defined(value) -> float | None:
    """A number, or None where it is undefined: None, NaN (JSON has none), or LVIS's -1."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or value < 0 else value


def metrics(*, run: str, seed: int, scale: str, dataset: str, raw: dict, keys, provenance: dict,
            classes: list[dict] | None = None) -> dict:
    """The record from an LVIS evaluator's output ('lvis/bbox_APr': 0.123 -> bbox.APr 12.3);
    with `classes` ({id, name, frequency, train_instances}) also per_class, from the
    evaluator's classwise keys ('lvis/bbox_AP_cls3')."""
    tasks = {task: {key: _percent(raw, f'lvis/{task}_{key}') for key in keys} for task in TASKS}
    record = dict(run=run, seed=seed, scale=scale, dataset=dataset, **tasks, provenance=provenance)
    if classes is not None:
        classes = sorted(({k: c[k] for k in PER_CLASS_FIELDS} for c in classes),
                         key=lambda c: c['id'])
        record['per_class'] = dict(classes=classes, **{
            task: [_percent(raw, f'lvis/{task}_AP_cls{c["id"]}') for c in classes]
            for task in TASKS})
    return record


def _percent(raw: dict, name: str) -> float | None:
    if name not in raw:
        raise SystemExit(f'evaluator returned no {name!r} (got {len(raw)} keys, e.g. '
                         f'{sorted(raw)[:12]}); the config\'s test_evaluator must be '
                         "FastLVISMetric with metric=['bbox', 'segm'] (classwise=True for "
                         'per-class AP)')
    value = defined(raw[name])
    return None if value is None else round(100 * value, 2)


def analysis(*, run: str, seed: int, scale: str, classes: list[dict], provenance: dict) -> dict:
    """The record from per-class statistics, listed as the paper's x-axis: by training instance
    count, descending (id breaks ties)."""
    classes = [dict(c, **{k: defined(c[k]) for k in SCORE_FIELDS}) for c in classes]
    classes.sort(key=lambda c: (-c['train_instances'], c['id']))
    return dict(run=run, seed=seed, scale=scale, classes=classes, provenance=provenance)


def write(path: Path, record: dict) -> Path:
    """Validate, then write atomically: a reader never sees a record it would refuse."""
    kind = 'analysis' if 'classes' in record else 'metrics'
    if kind == 'metrics':
        check_metrics(record, path, record['run'], record['seed'])
    else:
        check_analysis(record, path, record['run'], record['seed'])
    return atomic.write_json(path, record)


def read_json(path: Path) -> dict:
    """The file's object; malformed content is an error naming the file and the fix."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f'{path}: malformed JSON ({err}); delete it and re-run the stage that '
                         'writes it') from err
    if not isinstance(data, dict):
        raise RecordError(f'{path}: expected a JSON object; delete it and re-run the stage that '
                         'writes it')
    return data


def _require(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise RecordError(f'{path}: {what}; delete it and re-run the stage that writes it')


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


def _check_name(data: dict, path: Path, run: str, seed: int) -> None:
    _require(data.get('run') == run and data.get('seed') == seed, path,
             f'holds run {data.get("run")!r} seed {data.get("seed")!r}, but its name says run '
             f'{run!r} seed {seed}')
    _require(isinstance(data.get('provenance'), dict), path, "'provenance' is not an object")


def check_metrics(data: dict, path: Path, run: str, seed: int) -> None:
    for key in ('run', 'seed', *TASKS, 'provenance'):
        _require(key in data, path, f'missing key {key!r}')
    _check_name(data, path, run, seed)
    for task in TASKS:
        _require(isinstance(data[task], dict), path, f'{task!r} is not an object')
        for key, value in data[task].items():
            _metric_value(value, path, f'{task}.{key}')
    if 'per_class' in data:
        _check_per_class(data['per_class'], path)


def _check_class(cls, fields, path: Path, where: str) -> None:
    """One class of a record: its fields, frequency group and training instance count."""
    _require(isinstance(cls, dict) and set(fields) <= set(cls), path,
             f'{where} lacks one of {", ".join(fields)}')
    _require(cls['frequency'] in FREQUENCIES, path,
             f'{where}.frequency is {cls["frequency"]!r}, not r, c or f')
    _require(isinstance(cls['train_instances'], int), path,
             f'{where}.train_instances is not an integer')


def _check_per_class(per_class, path: Path) -> None:
    _require(isinstance(per_class, dict) and isinstance(per_class.get('classes'), list), path,
             "'per_class' is not an object with a 'classes' list")
    classes = per_class['classes']
    for i, cls in enumerate(classes):
        _check_class(cls, PER_CLASS_FIELDS, path, f'per_class.classes[{i}]')
    _require(len({c['id'] for c in classes}) == len(classes), path,
             'per_class.classes lists a class id twice')
    for task in TASKS:
        values = per_class.get(task)
        _require(isinstance(values, list) and len(values) == len(classes), path,
                 f'per_class.{task} is not a list of {len(classes)} APs, one per class')
        for i, value in enumerate(values):
            _metric_value(value, path, f'per_class.{task}[{i}]')


def check_analysis(data: dict, path: Path, run: str, seed: int) -> None:
    _check_name(data, path, run, seed)
    _require(isinstance(data.get('classes'), list), path, "'classes' is not a list")
    for i, cls in enumerate(data['classes']):
        where = f'classes[{i}]'
        _check_class(cls, CLASS_FIELDS, path, where)
        for key in SCORE_FIELDS:
            value = cls[key]
            _require(value is None or (isinstance(value, (int, float)) and 0 <= value <= 1),
                     path, f'{where}.{key} is {value!r}, not a number in [0, 1] or null')


def read_checked(kind: str, path: Path, run: str, seed: int) -> dict:
    """A metrics or analysis file as written, validated as its kind (RecordError if not)."""
    data = read_json(path)
    (check_metrics if kind == 'metrics' else check_analysis)(data, path, run, seed)
    return data


def load_metrics(path: Path, run: str, seed: int, paper: dict) -> dict:
    """The paper's columns of a metrics file, validated, with its provenance."""
    data = read_checked('metrics', path, run, seed)
    values = {}
    for column, spec in paper['columns'].items():
        task = data[spec['task']]
        _require(spec['metric'] in task, path, f'no {spec["task"]}.{spec["metric"]}')
        values[column] = _metric_value(task[spec['metric']], path,
                                       f'{spec["task"]}.{spec["metric"]}')
    return dict(values=values, tasks={t: data[t] for t in TASKS}, provenance=data['provenance'],
                diagnostics=data.get('diagnostics', {}), per_class=data.get('per_class'),
                path=path)


def load_analysis(path: Path, run: str, seed: int) -> dict:
    data = read_checked('analysis', path, run, seed)
    return dict(classes=data['classes'], provenance=data['provenance'], path=path)
