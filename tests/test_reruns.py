"""Both front ends rerun exactly the jobs whose resolved config, code or data changed.

In a copy of the checkout every output is made to exist and be up to date without training
(Snakemake's --touch; DVC's commit), then one thing is edited and the planned jobs are read.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from checkout import copy_checkout
from pipeline import matrix as mx

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}')
MATRIX = mx.load()
RUNS = mx.runs(MATRIX)
OPTION_RUN = 'loce_alpha0.8_r50_v1'


def _run(args, cwd):
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def planned(repo: Path) -> set[tuple[str, str]]:
    """(rule, run) of every job `snakemake -n` plans; run '' for jobs without one (the target
    rule `all`, which comes with any job, is left out)."""
    out = _run(['snakemake', '-n', '--config', 'scale=smoke'], repo)
    jobs, rule = set(), None
    for line in out.splitlines():
        if m := re.match(r'^(?:local)?rule (\w+):', line):
            rule = m.group(1)
            if rule in ('data', 'aggregate'):
                jobs.add((rule, ''))
        elif rule and (m := re.search(r'run=([^,\s]+)', line)):
            jobs.add((rule, m.group(1)))
    return jobs


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope='module')
def snake_repo(tmp_path_factory):
    """A copy in which every smoke output exists and is up to date, none of them trained."""
    repo = copy_checkout(tmp_path_factory.mktemp('snake'))
    out = _run(['snakemake', '-n', '-F', '--config', 'scale=smoke'], repo)
    for path in re.findall(r'^\s+output: (.+)$', out, flags=re.M):
        for name in path.split(', '):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).touch()
    _run(['snakemake', '--touch', '--cores', '1', '--config', 'scale=smoke'], repo)
    return repo


def test_snakemake_edit_nothing_rerun_nothing(snake_repo):
    assert planned(snake_repo) == set()


def test_snakemake_one_runs_options_rerun_that_run_and_the_aggregate(snake_repo):
    matrix_file = snake_repo / 'pipeline' / 'experiments.yaml'
    old = matrix_file.read_text()
    try:
        _edit(matrix_file, 'model.roi_head.indicator.alpha: 0.8', 'model.roi_head.indicator.alpha: 0.85')
        assert planned(snake_repo) == {('train', OPTION_RUN), ('evaluate', OPTION_RUN),
                                       ('aggregate', '')}
    finally:
        matrix_file.write_text(old)
    planned(snake_repo)  # resolves again: the config is back to its old hash
    _run(['snakemake', '--touch', '--cores', '1', '--config', 'scale=smoke'], snake_repo)
    assert planned(snake_repo) == set()


def test_snakemake_shrink_edit_reruns_every_smoke_run(snake_repo):
    tiny = snake_repo / 'configs' / 'smoke' / 'shrink.py'
    old = tiny.read_text()
    try:
        _edit(tiny, "rcnn=dict(max_per_img=20)", "rcnn=dict(max_per_img=21)")
        jobs = planned(snake_repo)
    finally:
        tiny.write_text(old)
    assert {run for rule, run in jobs if rule == 'train'} == set(RUNS)
    assert ('data', '') not in jobs


def test_snakemake_training_code_edit_reruns_every_training(snake_repo):
    code = snake_repo / 'loce' / 'models' / 'mfs.py'
    old = code.read_text()
    try:
        code.write_text(old + '\n# an edit\n')
        jobs = planned(snake_repo)
    finally:
        code.write_text(old)
    assert {run for rule, run in jobs if rule == 'train'} == set(RUNS)


@pytest.fixture(scope='module')
def dvc_repo(tmp_path_factory):
    """A git copy whose DVC stages are all committed as up to date, none of them run."""
    repo = copy_checkout(tmp_path_factory.mktemp('dvc'))
    (repo / 'dvc.lock').unlink(missing_ok=True)
    for args in (['git', 'init', '-q'], ['git', 'add', '-A'],
                 ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'copy']):
        _run(args, repo)
    _run([sys.executable, '-m', 'pipeline', 'resolve', '--scale', 'smoke'], repo)
    for spec_dir in ['data/smoke/lvis_v1', 'data/smoke/lvis_v0.5']:
        (repo / spec_dir).mkdir(parents=True, exist_ok=True)
        (repo / spec_dir / 'marker').touch()
    for run in RUNS:
        for sub in (f'work/smoke/{run}/seed0', f'work/smoke/results/metrics/{run}'):
            (repo / sub).mkdir(parents=True, exist_ok=True)
            (repo / sub / 'marker').touch()
    for run in mx.analysed_runs(MATRIX):
        (repo / f'work/smoke/results/analysis/{run}').mkdir(parents=True, exist_ok=True)
        (repo / f'work/smoke/results/analysis/{run}/marker').touch()
    for sub in ('ap', 'tables', 'figures'):
        (repo / f'work/smoke/results/{sub}').mkdir(parents=True, exist_ok=True)
        (repo / f'work/smoke/results/{sub}/marker').touch()
    (repo / 'work/smoke/results/REPORT.md').touch()
    _run(['dvc', 'commit', '--force', '--quiet'], repo)
    return repo


def dvc_changed(repo: Path) -> set[str]:
    out = _run(['dvc', 'status'], repo)
    return set(re.findall(r'^(\S+):\s*$', out, flags=re.M))


def test_dvc_edit_nothing_rerun_nothing(dvc_repo):
    assert dvc_changed(dvc_repo) == set()


def test_dvc_one_runs_options_change_that_runs_stage_alone(dvc_repo):
    matrix_file = dvc_repo / 'pipeline' / 'experiments.yaml'
    old = matrix_file.read_text()
    try:
        _edit(matrix_file, 'model.roi_head.indicator.alpha: 0.8', 'model.roi_head.indicator.alpha: 0.85')
        # The aggregate reads the runs' options as params (its report names each run's
        # overrides), so it is due too, as in Snakemake; no other run is.
        assert dvc_changed(dvc_repo) == {'resolve', 'aggregate'}
        _run(['dvc', 'repro', '--single-item', 'resolve'], dvc_repo)
        assert dvc_changed(dvc_repo) == {f'finetune@{OPTION_RUN}', 'aggregate'}
    finally:
        matrix_file.write_text(old)
        _run(['dvc', 'repro', '--single-item', 'resolve'], dvc_repo)
    assert dvc_changed(dvc_repo) == set()


def test_dvc_shrink_edit_changes_every_smoke_run(dvc_repo):
    tiny = dvc_repo / 'configs' / 'smoke' / 'shrink.py'
    old = tiny.read_text()
    try:
        _edit(tiny, "rcnn=dict(max_per_img=20)", "rcnn=dict(max_per_img=21)")
        _run(['dvc', 'repro', '--single-item', 'resolve'], dvc_repo)
        changed = dvc_changed(dvc_repo)
    finally:
        tiny.write_text(old)
        _run(['dvc', 'repro', '--single-item', 'resolve'], dvc_repo)
    expected = {f'pretrain@{r}' for r in MATRIX['pretrain']} | {f'finetune@{r}' for r in MATRIX['finetune']}
    assert changed == expected
