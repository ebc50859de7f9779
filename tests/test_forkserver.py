"""The fork server runs a stage exactly as a fresh process does (same weights, same exit status
and messages in the caller's own output), forwards SIGTERM, and leaves nothing running when the
caller is killed."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import matrix as mx

pytestmark = pytest.mark.slow
CLI = [sys.executable, '-m', 'pipeline']
SHORT = '+train_dataloader.dataset.indices=4'  # 2 iterations: the mechanism, not the science


def _children(pid: int) -> list[int]:
    out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    if not (mx.ROOT / 'data' / 'smoke' / 'lvis_v1').is_dir():
        subprocess.run([*CLI, 'data', '--scale', 'smoke'], cwd=mx.ROOT, check=True)
    path = tmp_path_factory.mktemp('forkserver') / 'socket'
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline.forkserver', '--scale', 'smoke',
                             '--socket', str(path)], cwd=mx.ROOT)
    deadline = time.time() + 300
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, 'the fork server did not start'
        time.sleep(0.2)
    yield dict(env=dict(os.environ, LOCE_FORKSERVER=str(path)), pid=proc.pid)
    proc.terminate()
    proc.wait(timeout=60)
    assert not path.exists()
    for seed in (41, 42, 43):  # the short runs are not the smoke scale's
        subprocess.run(['rm', '-rf', str(mx.work_dir('smoke', 'r50_v1', seed)),
                        str(mx.resolved_config('smoke', 'r50_v1', seed))], check=True)


def _train(seed, env, **kw):
    return subprocess.run([*CLI, 'train', '--scale', 'smoke', '--run', 'r50_v1', '--seed',
                           str(seed), '--unlisted-seed', '--cfg-options', SHORT], cwd=mx.ROOT,
                          env=env, capture_output=True, text=True, **kw)


def test_a_served_stage_trains_the_same_weights_as_a_fresh_process(server):
    weights = []
    for seed, env in ((41, os.environ), (42, server['env'])):
        work = mx.work_dir('smoke', 'r50_v1', seed)
        subprocess.run(['rm', '-rf', str(work)], check=True)
        done = _train(seed, env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f'r50_v1 seed {seed}: done; final checkpoint' in done.stdout  # the caller's output
        weights.append(torch.load(work / 'final.pth', map_location='cpu',
                                  weights_only=False)['state_dict'])
    # seeds differ only in the seed: compare a served seed-41 run with the fresh one
    work = mx.work_dir('smoke', 'r50_v1', 41)
    subprocess.run(['rm', '-rf', str(work)], check=True)
    assert _train(41, server['env']).returncode == 0
    served = torch.load(work / 'final.pth', map_location='cpu', weights_only=False)['state_dict']
    for key in weights[0]:
        assert torch.equal(weights[0][key], served[key]), key


def test_a_failing_stage_reports_its_status_and_message_through_the_server(server):
    done = subprocess.run([*CLI, 'train', '--scale', 'smoke', '--run', 'ghost', '--seed', '0'],
                          cwd=mx.ROOT, env=server['env'], capture_output=True, text=True)
    assert done.returncode == 1 and "unknown run 'ghost'" in done.stderr


def _start_long_training(server):
    work = mx.work_dir('smoke', 'r50_v1', 43)
    subprocess.run(['rm', '-rf', str(work)], check=True)
    job = subprocess.Popen([*CLI, 'train', '--scale', 'smoke', '--run', 'r50_v1', '--seed', '43',
                            '--unlisted-seed'],
                           cwd=mx.ROOT, env=server['env'], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not _children(server['pid']):
        assert time.time() < deadline and job.poll() is None
        time.sleep(0.2)
    [child] = _children(server['pid'])

    def training():  # mmengine's log of the run has its first iterations
        return any('Epoch(train)' in log.read_text() for log in work.glob('*/*.log'))
    while not training():
        assert time.time() < deadline and job.poll() is None
        time.sleep(0.5)
    return job, child


def test_sigterm_to_the_caller_stops_the_served_stage(server):
    job, child = _start_long_training(server)
    job.send_signal(signal.SIGTERM)
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 143 and 'SIGTERM: stopping at iteration' in output
    assert child not in _children(server['pid'])


def test_killing_the_caller_kills_the_served_stage(server):
    job, child = _start_long_training(server)
    job.kill()
    job.wait()
    deadline = time.time() + 60
    while child in _children(server['pid']) and time.time() < deadline:
        time.sleep(0.2)
    assert child not in _children(server['pid']) and not Path(f'/proc/{child}').exists()
