"""A real one-node SLURM cluster (tests/slurm_cluster.py) runs batch jobs, delivers SIGTERM to a
cancelled job, and runs a Snakemake workflow through the SLURM executor plugin, resubmitting a
failed and a cancelled job. That proves the plugin version the dev extra pins works with Debian
12's SLURM 22.05; then the pipeline's own smoke DAG, shrunk to three runs, goes through it with
profiles/slurm-cpu, one training cancelled mid-run, and must end with the published metrics.
The tests that start daemons are marked slow; the quick ones check that the cluster is skipped,
with the reason, where it cannot run, and that installing the packages starts no system daemon.
"""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import slurm_cluster
from pipeline import determinism, published, runconfig
from pipeline import matrix as mx
from slurm_cluster import one_node_cluster, running_daemons
from checkout import copy_checkout

PLUGIN = 'snakemake-executor-plugin-slurm==2.8.0'


@pytest.fixture(scope='module')
def cluster():
    with one_node_cluster() as running:
        yield running


def _wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'no {what} after {timeout} s'
        time.sleep(0.2)


def _pgrep(pattern):
    return subprocess.run(['pgrep', '-f', pattern], capture_output=True, text=True).stdout.split()


def _states(cluster, *job_ids):
    """{job id: state} from squeue, which keeps ended jobs for MinJobAge."""
    out = cluster.run('squeue', '--states=all', '-h', '-o', '%i|%T', '-j', ','.join(job_ids))
    return dict(line.split('|') for line in out.stdout.split())


def test_skips_with_the_reason_when_not_root(monkeypatch):
    monkeypatch.setattr(slurm_cluster.os, 'geteuid', lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match='needs root'):
        slurm_cluster.require_slurm()


def test_skips_with_the_reason_when_slurm_is_missing_and_cannot_be_installed(monkeypatch,
                                                                            tmp_path):
    monkeypatch.setattr(slurm_cluster.os, 'geteuid', lambda: 0)
    monkeypatch.setattr(slurm_cluster, 'COMMANDS', ('loce-no-such-daemon',))
    monkeypatch.setenv('PATH', str(tmp_path))  # no apt-get either
    with pytest.raises(pytest.skip.Exception, match='loce-no-such-daemon missing.*no apt-get'):
        slurm_cluster.require_slurm()


def test_package_install_is_kept_from_starting_system_daemons(monkeypatch, tmp_path):
    policy = tmp_path / 'policy-rc.d'
    monkeypatch.setattr(slurm_cluster, 'POLICY_RC', policy)
    with slurm_cluster._services_not_started():
        denied = subprocess.run([str(policy), 'munge', 'start'])
        assert denied.returncode == 101  # invoke-rc.d: "action forbidden by policy"
    assert not policy.exists()

    policy.write_text('#!/bin/sh\nexit 0\n')
    with slurm_cluster._services_not_started():
        pass
    assert policy.read_text() == '#!/bin/sh\nexit 0\n'  # the machine's own policy is kept


@pytest.mark.slow
def test_cluster_stops_every_daemon_and_job_it_started(tmp_path):
    job_name = f'loce-test-job-{tmp_path.name}'  # its process's argv[0], for pgrep
    before = running_daemons()
    with one_node_cluster() as running:
        started = {pid: name for pid, name in running_daemons().items() if pid not in before}
        assert {'munged', 'slurmctld', 'slurmd'} <= set(started.values())
        running.run('sbatch', '-p', 'cpu', '-o', '/dev/null', '--wrap',
                    f'bash -c "exec -a {job_name} sleep 600"')
        _wait_for(lambda: _pgrep(job_name), 'running job')
    assert running_daemons() == before
    assert not _pgrep(job_name)
    assert not running.root.exists()


@pytest.mark.slow
def test_batch_job_runs_in_the_partition_and_its_output_is_right(cluster, tmp_path):
    out = tmp_path / 'job.out'
    cluster.run('sbatch', '--wait', '-p', 'gpu', '-c', '1', '--mem', '100', '-o', str(out),
                '--wrap', 'echo "$SLURM_JOB_PARTITION $SLURM_CPUS_PER_TASK"; srun hostname')
    assert out.read_text().split('\n') == ['gpu 1', cluster.node, '']


@pytest.mark.slow
def test_cancelled_job_gets_sigterm_and_ends_cancelled(cluster, tmp_path):
    """What a training job will see when it is cancelled, preempted or hits its time limit:
    SIGTERM to every process of the job, SIGKILL after KillWait."""
    script = tmp_path / 'job.py'
    script.write_text(textwrap.dedent(f'''\
        #!{sys.executable}
        import pathlib, signal, sys, time
        out = pathlib.Path({str(tmp_path)!r})
        def on_term(signum, frame):
            (out / 'signal').write_text(str(signum))
            sys.exit(128 + signum)
        signal.signal(signal.SIGTERM, on_term)
        (out / 'started').touch()
        time.sleep(600)
        '''))
    script.chmod(0o755)
    job = cluster.run('sbatch', '--parsable', '-p', 'cpu', '-o', str(tmp_path / 'job.out'),
                      str(script)).stdout.strip()
    _wait_for((tmp_path / 'started').exists, 'start of the job')
    cluster.run('scancel', job)
    _wait_for(lambda: _states(cluster, job)[job] == 'CANCELLED', 'CANCELLED state', timeout=40)
    seen = tmp_path / 'signal'  # written by the handler, which may still be running
    _wait_for(lambda: seen.exists() and seen.read_text(), 'signal handler', timeout=40)
    assert seen.read_text() == str(int(signal.SIGTERM))


@pytest.mark.slow
def test_snakemake_slurm_executor_resubmits_failed_and_cancelled_jobs(cluster, tmp_path):
    """Rule a fails in its first SLURM job; rule b's first job is cancelled while it runs.
    `retries: 1` resubmits both, and the workflow ends. (a and b are independent, so that their
    jobs overlap and the test is quicker.)"""
    pytest.importorskip('snakemake_executor_plugin_slurm', reason=f'pip install {PLUGIN}')
    (tmp_path / 'Snakefile').write_text(textwrap.dedent('''\
        rule all:
            input: "a.txt", "b.txt"

        rule a:
            output: "a.txt"
            shell:
                "if [ ! -e a-first-job ]; then echo $SLURM_JOB_ID > a-first-job; exit 1; fi;"
                " echo $SLURM_JOB_ID > {output}"

        rule b:
            output: "b.txt"
            shell:
                "if [ ! -e b-first-job ]; then"
                "  trap 'echo TERM > b-got-sigterm; exit 143' TERM;"
                "  echo $SLURM_JOB_ID > b-first-job; sleep 600 & wait;"
                " fi;"
                " echo $SLURM_JOB_ID > {output}"
        '''))
    (tmp_path / 'profile').mkdir()
    (tmp_path / 'profile' / 'config.yaml').write_text(textwrap.dedent('''\
        executor: slurm
        jobs: 2
        retries: 1
        default-resources:
          slurm_partition: "cpu"
          mem_mb: 200
          runtime: 5
        '''))
    log = tmp_path / 'snakemake.log'
    with open(log, 'w') as out:
        snakemake = subprocess.Popen(
            [sys.executable, '-m', 'snakemake', '--workflow-profile', 'profile',
             # no slurmdbd on this cluster, so no sacct: squeue keeps ended jobs for MinJobAge
             '--slurm-status-command', 'squeue',
             # these jobs take seconds; the plugin's default first look is after 40 s
             '--slurm-init-seconds-before-status-checks', '3'],
            cwd=tmp_path, env=cluster.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        marker = tmp_path / 'b-first-job'
        # the whole line: the shell creates the file before it writes the job id
        _wait_for(lambda: marker.exists() and marker.read_text().endswith('\n')
                  or snakemake.poll() is not None, 'first job of rule b', timeout=180)
        assert snakemake.poll() is None, log.read_text()[-6000:]
        cancelled = marker.read_text().strip()
        cluster.run('scancel', cancelled)
        snakemake.wait(timeout=180)
    finally:
        snakemake.kill()
    assert snakemake.returncode == 0, log.read_text()[-6000:]

    # The plugin runs each rule through srun inside the job. scancel sends SIGTERM to every
    # process of the job, srun included, and srun answers its own SIGTERM with SIGKILL to its
    # step (Slurm's srun_job.c, _srun_signal_mgr). Which arrives first at the rule's shell is a
    # race, so its trap may or may not run; the training's resume never relies on it (it
    # resumes from its last checkpoint, test_smoke_dag_on_slurm_... below).
    seen = tmp_path / 'b-got-sigterm'
    assert not seen.exists() or seen.read_text() == 'TERM\n'
    a_job, b_job = ((tmp_path / f'{rule}.txt').read_text().strip() for rule in 'ab')
    failed = (tmp_path / 'a-first-job').read_text().strip()
    jobs = cluster.run('squeue', '--states=all', '-h', '-o', '%i|%k|%T').stdout.split()
    by_id = {job_id: (comment, state) for job_id, comment, state in
             (line.split('|') for line in jobs)}
    assert by_id[failed] == ('rule_a', 'FAILED')
    assert by_id[a_job] == ('rule_a', 'COMPLETED')
    assert by_id[cancelled] == ('rule_b', 'CANCELLED')
    assert by_id[b_job] == ('rule_b', 'COMPLETED')
    assert int(failed) < int(a_job) and int(cancelled) < int(b_job)


# The shrunken smoke DAG: the data, one pretrain and its fine-tune, Table 1's iteration-based
# baseline (the one with a mid-run checkpoint), their evaluations and analyses, the aggregate.
SMOKE_RUNS = ('r50_v1', 'loce_r50_v1', 'r50_v1_30e')
CANCELLED_RUN, CANCEL_AFTER = 'r50_v1_30e', 'iter_32.pth'
# Expected metrics other than the checkout's results/smoke/: a results root (metrics/<run>/
# seed0.json) of a plain local run of the same runs, for trying this test before they are
# published; its records must still match the checkout's configs.
EXPECTED_ENV = 'LOCE_SLURM_EXPECTED'
DAG_TIMEOUT_S = 2400


def _expected_metrics(checkout):
    """{run: metrics record} the cluster run must reproduce (the published set), each made under
    the config the checkout now resolves for its run (the header of
    work/smoke/configs/<run>/seed0.py)."""
    root = Path(os.environ.get(EXPECTED_ENV) or checkout / 'results' / 'smoke')
    expected, stale = {}, []
    for run in SMOKE_RUNS:
        path = mx.metrics_path('smoke', run, 0, root)
        resolved = checkout / mx.rel(mx.resolved_config('smoke', run, 0))
        sha = runconfig.written_sha256(resolved)
        record = json.loads(path.read_text()) if path.is_file() else None
        made_under = (record or {}).get('provenance', {}).get('config_sha256')
        if made_under != sha:
            where = path.relative_to(checkout) if path.is_relative_to(checkout) else path
            stale.append(f'{where}: ' + (f'made under config {made_under}' if record else
                                         'missing') + f', but run {run} now resolves to {sha}')
        expected[run] = record
    if stale:
        pytest.fail(f'the published smoke results are stale (not made under this checkout\'s '
                    f'configs): rerun and re-publish them (make smoke, then make publish), or '
                    f'set {EXPECTED_ENV} to the work/smoke/results of a local run of these '
                    f'runs, before this test can compare with them.\n' + '\n'.join(stale),
                    pytrace=False)
    return expected


def _jobs(cluster):
    """{job id: (comment, state)} of every job squeue shows, ended ones for MinJobAge."""
    out = cluster.run('squeue', '--states=all', '-h', '-o', '%i|%k|%T')
    return {job: (comment, state) for job, comment, state in
            (line.split('|') for line in out.stdout.split())}


def _checkpointed(work, name):
    """mmengine writes last_checkpoint after the checkpoint itself."""
    last = work / 'last_checkpoint'
    return (work / name).is_file() and last.is_file() and last.read_text().endswith(name)


def _same_metrics(fresh, expected, run):
    """bbox and segm exactly where the CPU kernel path can be pinned here (both records must then
    say it was), else within the smoke scale's tolerance."""
    pinned = [record['provenance'].get('cpu', {}).get('isa_pinned') for record in (fresh, expected)]
    if determinism.pin_blocker() is None:
        assert pinned == [True, True], f'{run}: CPU pin of (this run, expected): {pinned}'
    why = published.inexact_because(fresh, expected)
    if why is None:
        for task in ('bbox', 'segm'):
            assert fresh[task] == expected[task], f'{run} {task}'
        return
    tolerance = mx.scale(mx.load(), 'smoke')['tolerance']
    for task in ('bbox', 'segm'):
        assert fresh[task].keys() == expected[task].keys()
        for key, value in fresh[task].items():
            want = expected[task][key]
            assert (value is None) == (want is None), f'{run} {task}.{key}: {value} vs {want}'
            assert value is None or math.isclose(value, want, abs_tol=tolerance), \
                f'{run} {task}.{key}: {value} vs {want} (±{tolerance}; {why})'


@pytest.mark.slow
def test_smoke_dag_on_slurm_resumes_a_cancelled_training_and_gives_the_published_metrics(
        cluster, tmp_path):
    """profiles/slurm-cpu in a copy of the checkout. The iteration-based training is cancelled
    (scancel: SIGTERM) after its mid-run checkpoint; the profile's retries resubmit it, it resumes
    from that checkpoint, and every metric equals the published, uninterrupted run's."""
    pytest.importorskip('snakemake_executor_plugin_slurm', reason=f'pip install {PLUGIN}')
    checkout = copy_checkout(tmp_path / 'checkout')
    bin_dir = Path(sys.executable).parent  # the environment's python runs every stage in the jobs
    env = dict(cluster.env, PATH=f'{bin_dir}{os.pathsep}{cluster.env["PATH"]}',
               PYTHONUNBUFFERED='1')
    config = ['--config', 'scale=smoke', f'runs=[{",".join(SMOKE_RUNS)}]']
    plan = subprocess.run([sys.executable, '-m', 'snakemake', '-n', *config], cwd=checkout,
                          env=env, capture_output=True, text=True)  # writes the resolved configs
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    expected = _expected_metrics(checkout)

    work_rel = mx.rel(mx.work_dir('smoke', CANCELLED_RUN, 0))  # as the stages print it
    work = checkout / work_rel
    comment = f'rule_train_wildcards_smoke_{CANCELLED_RUN}_0'  # the plugin's sbatch --comment
    seen, cancelled = {}, None
    log = tmp_path / 'snakemake.log'
    start = time.monotonic()
    with open(log, 'w') as out:
        snakemake = subprocess.Popen(
            [sys.executable, '-m', 'snakemake', '--workflow-profile', 'profiles/slurm-cpu', *config,
             # no slurmdbd on this cluster, so no sacct: squeue keeps ended jobs for MinJobAge
             '--slurm-status-command', 'squeue',
             # the plugin's default first look is after 40 s, and each later one 10 s later
             '--slurm-init-seconds-before-status-checks', '5'],
            cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while snakemake.poll() is None:
            if time.monotonic() - start > DAG_TIMEOUT_S:
                pytest.fail(f'the DAG ran past {DAG_TIMEOUT_S} s:\n{log.read_text()[-6000:]}')
            seen.update(_jobs(cluster))
            if cancelled is None and _checkpointed(work, CANCEL_AFTER):
                running = [job for job, (c, state) in seen.items()
                           if c == comment and state == 'RUNNING']
                assert len(running) == 1, seen
                time.sleep(5)  # train on past the checkpoint: work the resumed job must redo
                cluster.run('scancel', running[0])
                cancelled = running[0]
            time.sleep(2)
    finally:
        if snakemake.poll() is None:
            os.killpg(snakemake.pid, signal.SIGTERM)  # Snakemake cancels its SLURM jobs
            try:
                snakemake.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(snakemake.pid, signal.SIGKILL)
                snakemake.wait()
    took = time.monotonic() - start
    seen.update(_jobs(cluster))
    text = log.read_text()
    assert cancelled, f'{CANCEL_AFTER} of {CANCELLED_RUN} never appeared:\n{text[-6000:]}'
    assert snakemake.returncode == 0, text[-6000:]
    print(f'smoke DAG ({", ".join(SMOKE_RUNS)}) on SLURM with one cancel: {took:.0f} s')

    attempts = sorted((job for job, (c, _) in seen.items() if c == comment), key=int)
    assert [seen[job][1] for job in attempts] == ['CANCELLED', 'COMPLETED'], \
        {job: seen[job] for job in attempts}
    assert attempts[0] == cancelled
    train_log = checkout / 'work' / 'smoke' / 'logs' / CANCELLED_RUN / 'seed0' / 'train.log'
    assert f'resuming from {work_rel}/{CANCEL_AFTER}' in train_log.read_text()
    # the cancelled attempt stopped between iterations (StopOnSigtermHook), not killed mid-step;
    # its own log is mmengine's, in the work dir (train.log is the retry's)
    stops = [line for path in work.glob('*/*.log') for line in path.read_text().splitlines()
             if 'SIGTERM: stopping at iteration' in line]
    assert len(stops) == 1, stops

    fresh = checkout / mx.rel(mx.results_dir('smoke'))
    assert (fresh / 'REPORT.md').is_file()
    for run in SMOKE_RUNS:
        _same_metrics(json.loads(mx.metrics_path('smoke', run, 0, fresh).read_text()),
                      expected[run], run)
