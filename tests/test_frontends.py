"""Snakemake and DVC expose the same runs with the same commands, all taken from the matrix."""
import os
import re
import subprocess
import sys
from pathlib import Path


from pipeline import matrix as mx

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}')


def _normalise(cmd: str) -> str:
    """Drop what differs by design: Snakemake's per-job seed, thread count and log redirect."""
    cmd = re.sub(r'\s*>\s*\S+\s+2>&1\s*$', '', cmd.strip())
    cmd = re.sub(r' --threads \d+', '', cmd)
    return re.sub(r' --seed \d+', '', cmd)


def snakemake_commands(scale: str) -> set[str]:
    out = subprocess.run(['snakemake', '-n', '-p', '-F', '--config', f'scale={scale}'],
                         cwd=mx.ROOT, env=ENV, capture_output=True, text=True, check=True).stdout
    cmds = {_normalise(line.split('Shell command:', 1)[1]) for line in out.splitlines()
            if 'Shell command:' in line}
    return cmds - {'None'}  # rule all has no command


def dvc_commands() -> set[str]:
    from dvc.repo import Repo

    cmds = set()
    with Repo(str(mx.ROOT)) as repo:
        for stage in repo.index.stages:
            for cmd in stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]:
                cmds.add(_normalise(cmd))
    return cmds


def expected_commands(scale: str) -> set[str]:
    matrix = mx.load()
    cli = 'python -m pipeline'
    cmds = {f'{cli} data --scale {scale}', f'{cli} aggregate --scale {scale}'}
    for run in mx.runs(matrix):
        cmds |= {f'{cli} train --scale {scale} --run {run}',
                 f'{cli} evaluate --scale {scale} --run {run}'}
    cmds |= {f'{cli} analyse --scale {scale} --run {run}' for run in mx.analysed_runs(matrix)}
    return cmds


def test_snakemake_and_dvc_run_the_same_commands_for_every_run():
    """DVC also has a `resolve` stage; Snakemake resolves configs when it reads the Snakefile."""
    snake = snakemake_commands('smoke')
    assert snake == expected_commands('smoke')
    assert dvc_commands() == snake | {'python -m pipeline resolve --scale smoke'}


def _dvc_stages() -> dict:
    import yaml
    return yaml.safe_load((mx.ROOT / 'dvc.yaml').read_text())['stages']


def test_dvc_stages_depend_on_the_code_their_stages_run():
    from pipeline.provenance import STAGE_CODE

    def covered(path, deps):  # the path or a folder above it is a dep
        return any(path == dep or path.startswith(dep + '/') for dep in deps)

    stages = _dvc_stages()
    for name in ('pretrain', 'finetune'):
        deps = stages[name]['do']['deps']
        for path in STAGE_CODE['train'] + STAGE_CODE['evaluate']:
            assert covered(path, deps), (name, path)
        assert '${scale}' in ' '.join(deps)
    for path in STAGE_CODE['analyse']:
        assert covered(path, stages['analyse']['do']['deps']), path


def test_dvc_aggregate_outputs_are_the_folders_of_the_aggregate_outputs():
    from pipeline.aggregate import outputs

    outs = {next(iter(o)) if isinstance(o, dict) else o for o in _dvc_stages()['aggregate']['outs']}
    prefix = 'work/${scale}/results/'
    assert {o.removeprefix(prefix) for o in outs} == {n.split('/')[0] for n in outputs()}


def test_snakemake_jobs_are_every_run_times_every_seed_of_the_scale():
    out = subprocess.run(['snakemake', '-n', '-F', '--config', 'scale=full'], cwd=mx.ROOT, env=ENV,
                         capture_output=True, text=True, check=True).stdout
    counts = dict(re.findall(r'^(\w+)\s+(\d+)$', out, flags=re.M))
    matrix = mx.load()
    seeds = len(matrix['scales']['full']['seeds'])
    assert int(counts['train']) == int(counts['evaluate']) == len(mx.runs(matrix)) * seeds
    assert int(counts['analyse']) == len(mx.analysed_runs(matrix)) * seeds


def test_dvc_stage_names_are_the_matrix_run_names():
    from dvc.repo import Repo

    matrix = mx.load()
    with Repo(str(mx.ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    assert {f'pretrain@{r}' for r in matrix['pretrain']} <= names
    assert {f'finetune@{r}' for r in matrix['finetune']} <= names


def test_full_scale_plans_without_data_in_seconds_worth_of_work(tmp_path):
    """The full plan needs no LVIS on disk: its first job is the fetch."""
    out = subprocess.run(['snakemake', '-n', '-p', '--config', 'scale=full'], cwd=mx.ROOT, env=ENV,
                         capture_output=True, text=True, check=True).stdout
    assert 'python -m pipeline data --scale full' in out


def test_snakemake_lint_is_clean():
    out = subprocess.run(['snakemake', '--lint', '--config', 'scale=smoke'], cwd=mx.ROOT,
                         env=ENV, capture_output=True, text=True)
    assert out.returncode == 0 and 'Congratulations' in out.stdout + out.stderr, \
        out.stdout[-3000:] + out.stderr[-3000:]
