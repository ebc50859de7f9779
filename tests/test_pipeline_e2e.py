"""End to end on the smoke profile, in a copy of the checkout: the DAG, no-op rerun, resume."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import matrix as mx

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}', PYTHONUNBUFFERED='1')
pytestmark = pytest.mark.slow


def _copy_checkout(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files: what a fresh clone of this work would hold."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=mx.ROOT,
                           capture_output=True, text=True, check=True).stdout.split('\0')
    for name in filter(None, files):
        src = mx.ROOT / name
        if src.is_file() and not name.startswith('results/'):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _run(args, cwd, **kw):
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)


@pytest.fixture(scope='module')
def checkout(tmp_path_factory):
    return _copy_checkout(tmp_path_factory.mktemp('checkout'))


def test_smoke_dag_builds_every_table_and_figure4_then_reruns_nothing(checkout):
    done = _run(['snakemake', '--cores', '2', '--config', 'profile=smoke'], checkout)
    assert done.returncode == 0, done.stderr[-4000:]
    results = checkout / 'results' / 'smoke'
    for i in range(1, 6):
        for ext in ('md', 'csv', 'tex'):
            assert (results / 'tables' / f'table{i}.{ext}').stat().st_size > 0
    svg = (results / 'figures' / 'figure4.svg').read_text()
    matrix = mx.load(checkout / 'pipeline' / 'experiments.yaml')
    for panel in matrix['figure4'].values():
        assert panel['title'] in svg
    assert (results / 'figures' / 'figure4.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    import json
    runs = mx.runs(matrix)
    for run in runs:
        metrics = json.loads((results / 'metrics' / run / 'seed0.json').read_text())
        assert metrics['run'] == run and metrics['provenance']['config_sha256']
        assert metrics['provenance']['train_wall_s'] > 0
    report = (results / 'REPORT.md').read_text()
    assert all(run in report for run in runs)

    again = _run(['snakemake', '-n', '--config', 'profile=smoke'], checkout, check=True)
    assert 'Nothing to be done' in again.stdout + again.stderr


def test_killed_training_resumes_and_ends_where_an_uninterrupted_run_ends(checkout):
    """Kill a pretrain after its first epoch checkpoint; the rerun resumes and gives the same weights."""
    if not (checkout / 'data' / 'smoke' / 'lvis_v1').is_dir():
        _run([sys.executable, '-m', 'pipeline', 'data', '--profile', 'smoke'], checkout, check=True)
    # two epochs, so that there is an epoch checkpoint to resume from before the end
    cmd = [sys.executable, '-m', 'pipeline', '--threads', '1', 'train', '--profile', 'smoke',
           '--run', 'r50_v05', '--seed', '7', '--cfg-options', 'train_cfg.max_epochs=2']
    work = checkout / 'work' / 'smoke' / 'r50_v05'
    shutil.rmtree(work, ignore_errors=True)

    job = subprocess.Popen(cmd, cwd=checkout, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    first = work / 'seed7' / 'epoch_1.pth'
    deadline = time.time() + 600
    while not (first.is_file() and (work / 'seed7' / 'last_checkpoint').is_file()) and time.time() < deadline:
        assert job.poll() is None, 'training ended before it could be killed'
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (work / 'seed7' / 'final.pth').exists()

    resumed = _run(cmd, checkout)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert 'resuming from' in resumed.stdout
    finished = _run(cmd, checkout, check=True)
    assert 'nothing to do' in finished.stdout

    shutil.copytree(work / 'seed7', work / 'seed7-killed')
    shutil.rmtree(work / 'seed7')
    _run(cmd, checkout, check=True)

    def weights(path):
        return torch.load(path, map_location='cpu', weights_only=False)['state_dict']
    a, b = weights(work / 'seed7-killed' / 'final.pth'), weights(work / 'seed7' / 'final.pth')
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
