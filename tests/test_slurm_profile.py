"""The Snakemake profiles plan the matrix's jobs with the resources and launch commands meant.

The SLURM profile is checked without a cluster: a dry run with the real executor plugin gives
each job's resources, and the plugin's own functions turn those into the sbatch options.
"""
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import matrix as mx

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = 'snakemake-executor-plugin-slurm==2.8.0'


def _dry_run(*args):
    """Plan every job (--forceall), whatever outputs this checkout already has."""
    out = subprocess.run([sys.executable, '-m', 'snakemake', '-n', '-p', '--forceall', *args],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _pairs(text):
    return dict(item.split('=', 1) for item in text.split(', ') if '=' in item)


def _jobs(log):
    """[(rule, wildcards, threads, resources, shell command)] of a dry run's job blocks."""
    jobs = []
    for block in re.split(r'\n(?=(?:local)?rule \w+:\n)', log)[1:]:
        rule = re.match(r'(?:local)?rule (\w+):', block).group(1)
        fields = dict(re.findall(r'^    (\w+): (.*)$', block, re.M))
        resources, wildcards = (_pairs(fields.get(key, '')) for key in ('resources', 'wildcards'))
        shell = re.search(r'^Shell command: (.*)$', block, re.M)
        jobs.append((rule, wildcards, int(fields.get('threads', 1)), resources,
                     shell.group(1) if shell else None))
    return jobs


@pytest.fixture(scope='module')
def slurm_jobs():
    pytest.importorskip('snakemake_executor_plugin_slurm', reason=f'pip install {PLUGIN}')
    return _jobs(_dry_run('--executor', 'slurm', '--workflow-profile', 'profiles/slurm',
                          '--cores', '64', '--config', 'scale=full'))


def test_slurm_plan_has_one_training_and_evaluation_per_run_and_seed(slurm_jobs):
    matrix = mx.load()
    expected = len(mx.runs(matrix)) * len(mx.scale(matrix, 'full')['seeds'])
    rules = [rule for rule, *_ in slurm_jobs]
    assert rules.count('train') == rules.count('evaluate') == expected


def test_training_jobs_ask_slurm_for_the_matrix_gpus_in_one_task(slurm_jobs):
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    gpus = mx.scale(mx.load(), 'full')['gpus']
    train = [job for job in slurm_jobs if job[0] == 'train']
    _, _, threads, resources, _ = train[0]
    assert resources['gpu'] == str(gpus) and resources['slurm_partition'] == 'gpu'

    typed = {k: int(v) if v.isdigit() else v for k, v in resources.items()}
    job = SimpleNamespace(resources=SimpleNamespace(get=typed.get, **typed), threads=threads)
    params = dict(run_uuid='u', slurm_logfile='log', comment_str='c', account='', partition='',
                  workdir=None)
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    assert f'--gpus={gpus}' in sbatch
    assert '--cpus-per-gpu=8' in sbatch
    assert '--ntasks-per-gpu' not in sbatch  # torchrun, not SLURM, starts the per-GPU processes
    assert f'--mem {typed["mem_mb"]}' in sbatch and f'-t {typed["runtime"]}' in sbatch


def test_gpu_training_runs_under_torchrun_on_reserved_devices(slurm_jobs):
    gpus = mx.scale(mx.load(), 'full')['gpus']
    for rule, wildcards, threads, _, shell in slurm_jobs:
        if rule != 'train':
            continue
        assert shell.startswith(
            f'python -m pipeline.gpu_slots {gpus} -- python -m torch.distributed.run --standalone'
            f' --nproc_per_node {gpus} -m -- pipeline --threads {threads // gpus} train --scale'
            f' full --run {wildcards["run"]} --seed {wildcards["seed"]} --launcher pytorch')


def test_default_profile_runs_smoke_training_as_one_cpu_process_of_the_pinned_threads():
    jobs = _jobs(_dry_run('--workflow-profile', 'profiles/default', '--cores', '2',
                          '--config', 'scale=smoke'))
    train = [job for job in jobs if job[0] == 'train']
    assert train
    for _, wildcards, threads, resources, shell in train:
        assert resources.get('gpu', '0') == '0'
        assert threads == mx.scale(mx.load(), 'smoke')['threads']
        assert shell == (f'python -m pipeline train --scale smoke '
                         f'--run {wildcards["run"]} --seed {wildcards["seed"]} '
                         f'> work/smoke/logs/{wildcards["run"]}/seed{wildcards["seed"]}/train.log 2>&1')


def test_cpu_slurm_profile_sends_smoke_jobs_to_the_cpu_partition_with_the_pinned_threads():
    pytest.importorskip('snakemake_executor_plugin_slurm', reason=f'pip install {PLUGIN}')
    jobs = _jobs(_dry_run('--executor', 'slurm', '--workflow-profile', 'profiles/slurm-cpu',
                          '--cores', '8', '--config', 'scale=smoke'))
    threads = mx.scale(mx.load(), 'smoke')['threads']
    for rule, _, job_threads, resources, _ in jobs:
        if rule in ('train', 'evaluate', 'analyse'):
            assert resources['slurm_partition'] == 'cpu' and resources.get('gpu', '0') == '0'
            assert int(resources['mem_mb']) <= 4000 and job_threads == threads, (rule, resources)


def test_a_cpu_scale_with_processes_trains_under_torchrun_without_gpu_slots():
    """The rehearsal (issue #23) runs the GPU path's launcher on CPU: torchrun, one pinned thread
    per process, no device reservation."""
    spec = mx.scale(mx.load(), 'rehearsal')
    jobs = _jobs(_dry_run('--workflow-profile', 'profiles/default', '--cores', '2',
                          '--config', 'scale=rehearsal'))
    train = [job for job in jobs if job[0] == 'train']
    assert len(train) == len(spec['runs'])
    for _, wildcards, threads, resources, shell in train:
        assert resources.get('gpu', '0') == '0'
        assert threads == spec['processes'] * spec['threads']
        assert shell.startswith(
            f'python -m torch.distributed.run --standalone --nproc_per_node {spec["processes"]} '
            f'-m -- pipeline --threads {spec["threads"]} train --scale rehearsal '
            f'--run {wildcards["run"]} --seed {wildcards["seed"]} --launcher pytorch')
