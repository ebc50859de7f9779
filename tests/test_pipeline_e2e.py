"""End to end at the smoke scale, in a copy of the checkout: the DAG against the published
results (expected values: exact where the CPU pin holds, on whatever x86-64 CPU runs it), no-op
rerun, a config edit that must train afresh, and kill-and-resume (an
iteration-based run by SIGKILL, an epoch-based fine-tune by SIGTERM) ending where an
uninterrupted run ends."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from checkout import copy_checkout
from pipeline import determinism
from pipeline import matrix as mx
from pipeline import published

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}', PYTHONUNBUFFERED='1')
pytestmark = pytest.mark.slow
CLI = [sys.executable, '-m', 'pipeline']


def _run(args, cwd, **kw):
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def _same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope='module')
def checkout(tmp_path_factory):
    return copy_checkout(tmp_path_factory.mktemp('checkout'))


def test_smoke_dag_reproduces_the_published_results_then_reruns_nothing(checkout):
    done = _run(['snakemake', '--cores', '2', '--config', 'scale=smoke'], checkout)
    assert done.returncode == 0, done.stderr[-4000:]
    results = checkout / 'work' / 'smoke' / 'results'
    for name in __import__('pipeline.aggregate', fromlist=['outputs']).outputs('smoke'):
        assert (results / name).stat().st_size > 0, name
    matrix = mx.load(checkout / 'pipeline' / 'experiments.yaml')
    for run in mx.runs(matrix):
        metrics = json.loads((results / 'metrics' / run / 'seed0.json').read_text())
        assert metrics['run'] == run and metrics['provenance']['config_sha256']
        assert metrics['provenance']['train_wall_s'] > 0
        assert metrics['provenance']['cpu']['threads'] == matrix['scales']['smoke']['threads']

    verdict = _run([*CLI, 'compare', '--scale', 'smoke'], checkout)
    fresh_record = json.loads((results / 'metrics' / 'r50_v1' / 'seed0.json').read_text())
    published_record = json.loads(
        mx.metrics_path('smoke', 'r50_v1', 0, checkout / 'results' / 'smoke').read_text())
    assert fresh_record['provenance']['cpu']['isa_pinned'] == (determinism.pin_blocker() is None)
    why = published.inexact_because(fresh_record, published_record)
    if determinism.pin_blocker() is None:  # any x86-64 CPU with AVX2: exact, whoever made it
        assert why is None, why
    if why is None:  # the published values, to the bit
        assert verdict.returncode == 0 and '[compare] identical' in verdict.stdout, verdict.stdout
    else:  # no pin here: the scale's band, and the reason said
        assert f'{why}, so bit-exact equality is not expected' in verdict.stdout, verdict.stdout

    again = _run(['snakemake', '-n', '--config', 'scale=smoke'], checkout, check=True)
    assert 'Nothing to be done' in again.stdout + again.stderr


def _train(checkout, run, seed, *options):
    cmd = [*CLI, 'train', '--scale', 'smoke', '--run', run, '--seed', str(seed),
           '--unlisted-seed']  # the drills train scratch seeds beside the smoke scale's
    return cmd + (['--cfg-options', *options] if options else [])


def test_a_config_edit_trains_afresh_and_keeps_the_old_work_dir(checkout):
    """The drill that once published stale weights under a new config's hash."""
    short = '+train_dataloader.dataset.indices=16'  # 8 iterations: the drill, not the science
    cmd = _train(checkout, 'r50_v1', 5, short)
    _run(cmd, checkout, check=True)
    work = checkout / 'work' / 'smoke' / 'r50_v1' / 'seed5'
    old = work.with_name('seed5-old.pth')
    shutil.copy2(work / 'final.pth', old)
    config = checkout / 'configs' / 'mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'
    text = config.read_text()
    config.write_text(text + '\noptim_wrapper = dict(optimizer=dict(lr=0.0005))\n')
    try:
        again = _run(cmd, checkout, check=True)
    finally:
        config.write_text(text)
    assert 'moved it to' in again.stdout and 'training afresh' in again.stdout, again.stdout
    stale = [p for p in work.parent.iterdir() if p.name.startswith('seed5.stale-')]
    assert len(stale) == 1 and (stale[0] / 'final.pth').is_file()
    _same_weights(stale[0] / 'final.pth', old)
    with pytest.raises(AssertionError):
        _same_weights(work / 'final.pth', old)
    identity = json.loads((work / 'identity.json').read_text())
    summary = json.loads((work / 'train.json').read_text())
    assert summary['provenance']['config_sha256'] == identity['config_sha256']


def _kill_after(checkpoint, checkout, cmd, work, sig):
    """Start `cmd`, wait for `checkpoint` in `work`, let it train on a little, send `sig`."""
    job = subprocess.Popen(cmd, cwd=checkout, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 900
    while not ((work / checkpoint).is_file() and (work / 'last_checkpoint').is_file()) \
            and time.time() < deadline:
        assert job.poll() is None, 'training ended before it could be stopped'
        time.sleep(0.5)
    time.sleep(3.0)  # well into the second half
    os.killpg(job.pid, sig)
    output, _ = job.communicate()
    assert not (work / 'final.pth').exists()
    return job.returncode, output


def test_killed_iteration_based_run_resumes_and_ends_where_an_uninterrupted_run_ends(checkout):
    """SIGKILL after the mid-run checkpoint of an iteration-based run (Table 1's 30-epoch
    baseline); the rerun resumes, replays the sampler to where it was, and gives the same
    weights as an uninterrupted run."""
    cmd = _train(checkout, 'r50_v1_30e', 7)
    work = checkout / 'work' / 'smoke' / 'r50_v1_30e' / 'seed7'
    _kill_after('iter_32.pth', checkout, cmd, work, signal.SIGKILL)
    resumed = _run(cmd, checkout)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert 'resuming from' in resumed.stdout
    assert 'nothing to do' in _run(cmd, checkout, check=True).stdout

    shutil.move(work, work.with_name('seed7-killed'))
    _run(cmd, checkout, check=True)
    _same_weights(work.with_name('seed7-killed') / 'final.pth', work / 'final.pth')


def test_sigterm_stops_a_fine_tune_safely_and_the_resumed_run_is_exact(checkout):
    """SIGTERM (what SLURM sends) in the second half of a fine-tune: it stops between
    iterations, the rerun resumes with the checkpointed feature memory, and weights and every
    metric equal an uninterrupted run's."""
    pretrain = checkout / 'work' / 'smoke' / 'r50_v1' / 'seed0' / 'final.pth'
    if not pretrain.is_file():
        _run(_train(checkout, 'r50_v1', 0), checkout, check=True)
    cmd = _train(checkout, 'loce_r50_v1', 0, 'train_cfg.max_epochs=2')
    work = checkout / 'work' / 'smoke' / 'loce_r50_v1' / 'seed0'
    shutil.rmtree(work, ignore_errors=True)
    code, output = _kill_after('epoch_1.pth', checkout, cmd, work, signal.SIGTERM)
    assert code == 143 and 'SIGTERM: stopping at iteration' in output, output[-3000:]
    resumed = _run(cmd, checkout)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert any('memory warm-up skipped' in log.read_text() for log in work.glob('*/*.log'))
    evaluate = [*CLI, 'evaluate', '--scale', 'smoke', '--run', 'loce_r50_v1', '--seed', '0']
    _run(evaluate, checkout, check=True)
    metrics = checkout / 'work' / 'smoke' / 'results' / 'metrics' / 'loce_r50_v1' / 'seed0.json'
    interrupted = json.loads(metrics.read_text())

    shutil.move(work, work.with_name('seed0-interrupted'))
    _run(cmd, checkout, check=True)
    _run(evaluate, checkout, check=True)
    uninterrupted = json.loads(metrics.read_text())
    _same_weights(work.with_name('seed0-interrupted') / 'final.pth', work / 'final.pth')
    for task in ('bbox', 'segm'):
        assert interrupted[task] == uninterrupted[task]
