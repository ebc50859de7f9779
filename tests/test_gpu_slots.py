"""pipeline.gpu_slots: jobs running side by side on one host never share a GPU, and a slot
comes back when its job dies, however it dies."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import gpu_slots

ROOT = Path(__file__).resolve().parent.parent

# The child reports the devices it was given, then holds them until the test says "go".
HOLD = ('import os, pathlib, sys, time\n'
        'out = pathlib.Path(sys.argv[1])\n'
        'out.with_suffix(".tmp").write_text(os.environ["CUDA_VISIBLE_DEVICES"])\n'
        'out.with_suffix(".tmp").replace(out)\n'
        'while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.05)\n')


def _env(tmp_path, devices='0,1,2,3'):
    env = {k: v for k, v in os.environ.items() if k != 'CUDA_VISIBLE_DEVICES'}
    env.update({gpu_slots.POOL_ENV: devices, gpu_slots.LOCK_DIR_ENV: str(tmp_path / 'locks'),
                'PYTHONPATH': str(ROOT)})
    return env


def _holder(tmp_path, name, n, env):
    report, go = tmp_path / f'{name}.devices', tmp_path / 'go'
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline.gpu_slots', str(n), '--',
                             sys.executable, '-c', HOLD, str(report), str(go)], env=env, cwd=ROOT)
    return proc, report


def _wait_for(path, proc):
    while not path.exists():
        assert proc.poll() is None, f'holder exited early with {proc.returncode}'
        time.sleep(0.05)
    return path.read_text().split(',')


def test_two_concurrent_jobs_get_disjoint_devices(tmp_path):
    env = _env(tmp_path)
    first, first_report = _holder(tmp_path, 'first', 2, env)
    second, second_report = _holder(tmp_path, 'second', 2, env)
    try:
        a, b = _wait_for(first_report, first), _wait_for(second_report, second)
        # Both hold their devices at this moment (neither has seen "go").
        assert len(a) == len(b) == 2
        assert not set(a) & set(b)
        assert set(a) | set(b) == {'0', '1', '2', '3'}
    finally:
        (tmp_path / 'go').touch()
        assert first.wait(30) == 0 and second.wait(30) == 0


def test_a_busy_pool_gives_nothing_until_the_holder_is_killed(tmp_path):
    env = _env(tmp_path, devices='0,1')
    holder, report = _holder(tmp_path, 'holder', 2, env)
    devices, locks = ['0', '1'], tmp_path / 'locks'
    try:
        assert sorted(_wait_for(report, holder)) == devices
        assert gpu_slots.try_acquire(1, devices, locks) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        held = gpu_slots.try_acquire(2, devices, locks)
        assert held is not None and sorted(held) == devices
        gpu_slots.release(held)
    finally:
        holder.kill()


def test_all_or_nothing_leaves_free_devices_unlocked(tmp_path):
    devices, locks = ['0', '1', '2'], tmp_path / 'locks'
    with gpu_slots.slots(2, devices, locks) as taken:
        assert gpu_slots.try_acquire(2, devices, locks) is None
        # The failed attempt for two released the one device it could get.
        one = gpu_slots.try_acquire(1, devices, locks)
        assert one is not None and set(one).isdisjoint(taken)
        gpu_slots.release(one)
    everything = gpu_slots.try_acquire(3, devices, locks)
    assert everything is not None
    gpu_slots.release(everything)


def test_devices_assigned_by_a_scheduler_are_used_unchanged(tmp_path):
    env = _env(tmp_path, devices='0')
    env['CUDA_VISIBLE_DEVICES'] = '3,7'
    out = subprocess.run([sys.executable, '-m', 'pipeline.gpu_slots', '2', '--', sys.executable,
                          '-c', 'import os; print(os.environ["CUDA_VISIBLE_DEVICES"])'],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '3,7'
    assert not (tmp_path / 'locks').exists()


def test_exit_status_of_the_command_is_passed_on(tmp_path):
    code = subprocess.run([sys.executable, '-m', 'pipeline.gpu_slots', '1', '--', sys.executable,
                           '-c', 'raise SystemExit(3)'], env=_env(tmp_path), cwd=ROOT).returncode
    assert code == 3


def test_asking_for_more_devices_than_the_host_has_fails_with_the_fix(tmp_path):
    with pytest.raises(SystemExit, match='needs 3 GPUs but this host has 2'):
        gpu_slots.try_acquire(3, ['0', '1'], tmp_path)
