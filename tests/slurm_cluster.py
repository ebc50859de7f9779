"""A one-node SLURM cluster on this machine, started and stopped by a test.

It uses Debian's packages (slurm-wlm and munge; SLURM 22.05 in Debian 12), installed with
apt-get when missing. Everything the daemons read or write is in one temporary directory: the
munge key and socket, slurm.conf, the controller's state, slurmd's spool and the logs. Client
commands on this side find it through SLURM_CONF in `Cluster.env`. Inside jobs, a command may not
see SLURM_CONF: snakemake-executor-plugin-slurm-jobstep 0.6.1 drops every SLURM_* variable except
the job's identity before its inner `srun`. So slurmd runs in a private mount namespace, where the
directory's etc/ (slurm.conf) is bind-mounted on /etc/slurm, the compiled-in default. Jobs then
find the configuration where they would on a real cluster's nodes. The machine's own /etc/slurm
and /etc/munge are neither read nor changed, and a cluster already running here keeps running.
Where this cannot work (not root, no package access), the caller is skipped with the reason,
never silently.

No cgroups: ProctrackType=proctrack/linuxproc (processes tracked through /proc) and
TaskPlugin=task/none, so slurmd loads no cgroup plugin and needs no cgroup.conf. The cgroup v1
plugins do work in this sandbox (a VM without systemd). But they leave slurm_<node> directories
in /sys/fs/cgroup after the cluster stops. They also depend on the host's cgroup version: the
cgroup/v2 plugin works together with systemd (SchedMD's cgroup v2 page), and many CI machines
and containers run no systemd.

There is no slurmdbd, so `sacct` reports "Slurm accounting storage is disabled". A Snakemake
SLURM executor must therefore query job states with `squeue` (`--slurm-status-command squeue`),
and MinJobAge keeps ended jobs in squeue long enough for that.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ('slurm-wlm', 'munge')
COMMANDS = ('munged', 'munge', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'squeue', 'scancel',
            'sinfo', 'scontrol')
DAEMONS = ('munged', 'slurmctld', 'slurmd', 'slurmstepd')
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
# Ended jobs stay visible to squeue this long, the plugin's threshold for trusting squeue.
MIN_JOB_AGE_S = 300
POLICY_RC = Path('/usr/sbin/policy-rc.d')
# Debian installs the daemons in /usr/sbin, often not on a non-login PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/sbin'])


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its directory, the environment its client commands need, and the node
    as slurm.conf describes it."""
    root: Path
    env: dict = field(repr=False)
    node: str
    cpus: int
    memory_mb: int
    partitions: tuple

    def run(self, *args, check=True, timeout=60, **kwargs):
        """A client command (sbatch, squeue, ...) against this cluster."""
        out = subprocess.run(args, env=self.env, capture_output=True, text=True,
                             timeout=timeout, **kwargs)
        if check and out.returncode:
            raise RuntimeError(f'{" ".join(args)} exited {out.returncode}:\n'
                               f'{out.stdout[-2000:]}{out.stderr[-2000:]}')
        return out


def require_slurm():
    """Skip unless this process is root and the SLURM and munge commands exist or can be
    installed (apt-get, bounded by INSTALL_TIMEOUT_S)."""
    if os.geteuid() != 0:
        pytest.skip('a SLURM cluster needs root (slurmd starts jobs as their users); run as root')
    missing = _missing()
    if not missing:
        return
    if not shutil.which('apt-get'):
        pytest.skip(f'SLURM is not installed ({", ".join(missing)} missing) and there is no '
                    f'apt-get to install {" ".join(PACKAGES)}')
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    with _services_not_started():
        for command in (['apt-get', 'update', '-q'],
                        ['apt-get', 'install', '-y', '-q', '--no-install-recommends', *PACKAGES]):
            try:
                out = subprocess.run(command, env=env, capture_output=True, text=True,
                                     timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.skip(f'`{" ".join(command)}` ran past {INSTALL_TIMEOUT_S} s: no package '
                            'access? Install them by hand: apt-get install ' + ' '.join(PACKAGES))
            if out.returncode:
                pytest.skip(f'`{" ".join(command)}` failed (no package access?):\n'
                            f'{(out.stdout + out.stderr)[-1500:]}')
    missing = _missing()
    if missing:
        pytest.skip(f'apt-get installed {" ".join(PACKAGES)} but {", ".join(missing)} is missing')


def _missing():
    return [c for c in COMMANDS if not shutil.which(c, path=SEARCH_PATH)]


def _path(command):
    return shutil.which(command, path=SEARCH_PATH)


@contextmanager
def _services_not_started():
    """The packages' install scripts would start the system's munged, slurmctld and slurmd,
    daemons nobody stops afterwards; a policy-rc.d that denies starts keeps them from it (a
    policy already there is left as it is)."""
    if POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text('#!/bin/sh\n# written by tests/slurm_cluster.py while installing\n'
                         'exit 101\n')
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink()


@contextmanager
def one_node_cluster(partitions=('cpu', 'gpu')):
    """Start munged, slurmctld and slurmd for one node (this machine, its CPUs and memory as
    `slurmd -C` sees them) in every partition of `partitions` (the first is the default); yield
    a Cluster once the node is idle. On exit cancel every job, stop the daemons and remove the
    directory. Raise if a daemon started here, or any process of its jobs, is still running
    afterwards. Those are recognised by their pids and by slurmd's mount namespace, which every
    slurmstepd and job process inherits, so a cluster already on the machine is never touched."""
    require_slurm()
    root = Path(tempfile.mkdtemp(prefix='loce-slurm-'))
    root.chmod(0o755)  # munged wants its socket's directories searchable by all
    daemons, cluster, namespace = {}, None, None
    try:
        cluster = _configure(root, partitions)
        daemons['munged'] = _start(root, 'munged', [
            _path('munged'), '--foreground', f'--socket={root / "munge" / "socket"}',
            f'--key-file={root / "munge" / "munge.key"}',
            f'--pid-file={root / "munge" / "munged.pid"}',
            f'--seed-file={root / "munge" / "munged.seed"}'], cluster.env)
        _wait(lambda: cluster.run('munge', '-n', '-S', str(root / 'munge' / 'socket'),
                                  check=False).returncode == 0, daemons, root, 'munged')
        daemons['slurmctld'] = _start(root, 'slurmctld', [_path('slurmctld'), '-D'],
                                      cluster.env)
        _wait(lambda: 'is UP' in cluster.run('scontrol', 'ping', check=False).stdout,
              daemons, root, 'slurmctld')
        daemons['slurmd'] = _start(root, 'slurmd', [
            'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c',
            'mount --bind "$0" /etc/slurm && exec "$1" -D -N "$2"',
            str(root / 'etc'), _path('slurmd'), cluster.node], cluster.env)
        # the controller's log says why a node that registered is not idle (drained, down)
        _wait(lambda: _node_state(cluster) == 'idle', daemons, root, 'slurmd',
              lambda: f'Node state: {_node_state(cluster)!r}.\n{_log_tail(root, "slurmctld")}')
        namespace = _mount_namespace(daemons['slurmd'].pid)
        yield cluster
    finally:
        try:
            if 'slurmctld' in daemons:
                _cancel_all(cluster, namespace, daemons.get('slurmd'))
            for name in ('slurmd', 'slurmctld', 'munged'):
                if name in daemons:
                    _stop(daemons[name])
            left = _leftovers(namespace, [process.pid for process in daemons.values()])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if left:
            raise RuntimeError(f'processes of the SLURM cluster left running after it stopped '
                               f'(now killed): {left}')


def _configure(root, partitions):
    for sub in ('etc', 'munge', 'state', 'spool', 'log'):
        (root / sub).mkdir()
    (root / 'munge').chmod(0o755)
    key = root / 'munge' / 'munge.key'
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    probe = subprocess.run([_path('slurmd'), '-C'], capture_output=True, text=True, check=True)
    node_line = probe.stdout.splitlines()[0]  # NodeName=... CPUs=... RealMemory=...
    fields = dict(item.split('=', 1) for item in node_line.split())
    ctld_port, slurmd_port = _free_ports(2)
    partition_lines = [f'PartitionName={name} Nodes=ALL Default={"YES" if i == 0 else "NO"} '
                       'MaxTime=INFINITE State=UP' for i, name in enumerate(partitions)]
    conf = root / 'etc' / 'slurm.conf'
    conf.write_text('\n'.join([
        '# written by tests/slurm_cluster.py: one node, everything under this directory',
        'ClusterName=loce-test',
        f'SlurmctldHost={fields["NodeName"]}(127.0.0.1)',
        f'SlurmctldPort={ctld_port}',
        f'SlurmdPort={slurmd_port}',
        'SlurmUser=root',
        'SlurmdUser=root',
        'AuthType=auth/munge',
        'CredType=cred/munge',
        f'AuthInfo=socket={root / "munge" / "socket"}',
        f'StateSaveLocation={root / "state"}',
        f'SlurmdSpoolDir={root / "spool"}',
        f'SlurmctldPidFile={root / "slurmctld.pid"}',
        f'SlurmdPidFile={root / "slurmd.pid"}',
        f'SlurmctldLogFile={root / "log" / "slurmctld.log"}',
        f'SlurmdLogFile={root / "log" / "slurmd.log"}',
        'MailProg=/bin/true',
        # no cgroups: processes tracked through /proc, no task confinement
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'JobCompType=jobcomp/none',
        'MpiDefault=none',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core_Memory',
        'SchedulerType=sched/backfill',
        'ReturnToService=2',
        f'MinJobAge={MIN_JOB_AGE_S}',
        f'{node_line} NodeAddr=127.0.0.1 State=UNKNOWN',
        *partition_lines,
        '']))
    env = dict(os.environ, SLURM_CONF=str(conf))
    return Cluster(root=root, env=env, node=fields['NodeName'], cpus=int(fields['CPUs']),
                   memory_mb=int(fields['RealMemory']), partitions=tuple(partitions))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(root, name, command, env):
    """A daemon in the foreground, as a child in its own session, its output kept in the log
    directory for the error message if it fails."""
    with open(root / 'log' / f'{name}.out', 'w') as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait(ready, daemons, root, name, detail=lambda: ''):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        died = [n for n, p in daemons.items() if p.poll() is not None]
        if died:
            raise RuntimeError(f'{", ".join(died)} exited (code {daemons[died[0]].returncode}) '
                               f'while starting {name}:\n{_log_tail(root, died[0])}')
        time.sleep(0.2)
    raise RuntimeError(f'{name} was not ready after {START_TIMEOUT_S} s. {detail()}\n'
                       f'{_log_tail(root, name)}')


def _log_tail(root, name, lines=30):
    texts = []
    for path in sorted((root / 'log').glob(f'{name}*')):
        tail = path.read_text(errors='replace').splitlines()[-lines:]
        texts.append(f'--- {path.name} (last {len(tail)} lines) ---\n' + '\n'.join(tail))
    return '\n'.join(texts) or f'(no log of {name})'


def _node_state(cluster):
    return cluster.run('sinfo', '-h', '-N', '-n', cluster.node, '-o', '%T',
                       check=False).stdout.strip().split('\n')[0]


def _cancel_all(cluster, namespace, slurmd):
    """Cancel whatever the test left queued or running, and wait until every job has ended and
    its processes, slurmstepd included, have exited (at most KillWait, 30 s by default, for a
    job that ignores SIGTERM): a slurmd stopped while it launches a job leaves a slurmstepd."""
    cluster.run('scancel', '--user', 'root', check=False)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        states = cluster.run('squeue', '-h', '-o', '%T', check=False).stdout.split()
        jobs = set(_in_namespace(namespace)) - {slurmd.pid if slurmd else None}
        if not jobs and not set(states) - {'COMPLETED', 'CANCELLED', 'FAILED', 'TIMEOUT'}:
            return
        time.sleep(0.5)


def _stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _leftovers(namespace, pids):
    """{pid: command} of the cluster's processes (`pids`, and all in slurmd's mount namespace)
    still running after a grace period (a slurmstepd may take a moment to finish); those are
    killed."""
    deadline = time.monotonic() + 10
    while True:
        left = {pid: _command(pid) for pid in pids if _alive(pid)} | _in_namespace(namespace)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def running_daemons():
    """{pid: name} of the munge and SLURM daemons running now on the whole machine, as pgrep
    finds them (zombies, exited but not yet reaped by init, left out)."""
    found = {}
    for name in DAEMONS:
        out = subprocess.run(['pgrep', '-x', name], capture_output=True, text=True)
        found.update({int(pid): name for pid in out.stdout.split() if _alive(int(pid))})
    return found


def _mount_namespace(pid):
    try:
        return os.readlink(f'/proc/{pid}/ns/mnt')
    except OSError:
        return None


def _in_namespace(namespace):
    """{pid: command} of the live processes in this mount namespace (none for None)."""
    if namespace is None:
        return {}
    return {int(entry.name): _command(entry.name) for entry in Path('/proc').iterdir()
            if entry.name.isdigit() and _mount_namespace(entry.name) == namespace
            and _alive(entry.name)}


def _command(pid):
    try:
        return Path(f'/proc/{pid}/comm').read_text().strip()
    except OSError:
        return '?'


def _alive(pid):
    """Running, not a zombie (this machine's init may not reap orphans promptly)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'
