"""Snakemake and DVC expose the same runs with the same commands, all taken from the matrix."""
import json
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
    assert {o.removeprefix(prefix) for o in outs} == {n.split('/')[0] for n in outputs('smoke')}


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


def test_snakemake_config_errors_say_what_is_wrong():
    """A table outside pipeline/paper.yaml and a run without its stage-1 run stop the plan with
    one line naming the `--config` key, not a traceback."""
    for config, message in ((['tables=[table1,table9]'], "--config tables: unknown table 'table9'"),
                            (['runs=[loce_r50_v1]'],
                             '--config runs: loce_r50_v1 needs its pretrain run r50_v1')):
        out = subprocess.run(['snakemake', '-n', '--config', 'scale=smoke', *config], cwd=mx.ROOT,
                             env=ENV, capture_output=True, text=True)
        assert out.returncode != 0 and message in out.stdout + out.stderr, out.stderr[-2000:]
        assert 'Traceback' not in out.stdout + out.stderr


def test_snakemake_lint_is_clean():
    out = subprocess.run(['snakemake', '--lint', '--config', 'scale=smoke'], cwd=mx.ROOT,
                         env=ENV, capture_output=True, text=True)
    assert out.returncode == 0 and 'Congratulations' in out.stdout + out.stderr, \
        out.stdout[-3000:] + out.stderr[-3000:]


def test_dvc_shows_ap_per_run_one_plot_per_panel_and_the_matrix_as_params():
    """`dvc metrics show` reads the per-run AP files (no provenance); each Figure 4 panel is a
    plot of its own file; the matrix sections a stage reads are its params."""
    import yaml
    from dvc.repo import Repo

    spec = yaml.safe_load((mx.ROOT / 'dvc.yaml').read_text())
    assert spec['metrics'] == ['work/${scale}/results/ap']
    panels = mx.load()['figure4']
    data_plots = [p for p in spec['plots'] if isinstance(p, dict)]
    assert [next(iter(p)) for p in data_plots] == [
        f'Figure 4 ({panel}) ${{figure4.{panel}.title}}' for panel in panels]
    assert [list(next(iter(p.values()))['y']) for p in data_plots] == [
        [f'work/${{scale}}/results/figures/figure4_{panel}.csv'] for panel in panels]
    assert 'work/${scale}/results/figures/figure4.png' in spec['plots']
    with Repo(str(mx.ROOT)) as repo:
        params = {stage.addressing: {(d.def_path, key) for d in stage.deps
                                     for key in getattr(d, 'params', None) or []}
                  for stage in repo.index.stages}
    matrix = 'pipeline/experiments.yaml'
    assert {(matrix, 'scales.smoke'), (matrix, 'pretrain'), (matrix, 'finetune')} \
        <= params['resolve'] & params['aggregate']
    assert (matrix, 'figure4') in params['aggregate']


def test_dvc_lock_is_not_git_ignored():
    """DVC refuses to run at all when dvc.lock is git-ignored; dvc.yaml says why none is
    committed and how to read `dvc status` before a first run."""
    ignored = subprocess.run(['git', 'check-ignore', '-q', 'dvc.lock'], cwd=mx.ROOT)
    assert ignored.returncode == 1
    assert 'dvc.lock: none is committed' in (mx.ROOT / 'dvc.yaml').read_text()


def test_snakemake_report_shows_the_tables_figure4_and_report():
    """The aggregate rule flags the Markdown tables, Figure 4's PNG and REPORT.md for
    `snakemake --report`, each with a caption file that exists; the report has a description.
    Parses the Snakefile only (no DAG is run)."""
    script = (
        'import json, sys\n'
        'from pathlib import Path\n'
        'from snakemake.api import SnakemakeApi\n'
        'from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings\n'
        'with SnakemakeApi(OutputSettings()) as api:\n'
        '    wf = api.workflow(ResourceSettings(), ConfigSettings(config={"scale": "smoke"}),\n'
        '                      snakefile=Path("Snakefile"), workdir=Path("."))._workflow\n'
        '    rule = wf.get_rule("aggregate")\n'
        '    flags = {str(f): f.flags["report"]._asdict() for f in rule.output\n'
        '             if "report" in f.flags}\n'
        '    print(json.dumps(dict(flags=flags, text=str(wf.report_text)), default=str))\n')
    out = subprocess.run([sys.executable, '-c', script], cwd=mx.ROOT, env=ENV,
                         capture_output=True, text=True, check=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    results = 'work/smoke/results'
    assert set(found['flags']) == ({f'{results}/tables/table{i}.md' for i in range(1, 6)}
                                   | {f'{results}/figures/figure4.png', f'{results}/REPORT.md'})
    for flag in found['flags'].values():
        assert Path(flag['caption']).resolve().is_file() and flag['category']
    assert Path(found['text']).resolve() == mx.ROOT / 'pipeline' / 'report' / 'workflow.rst'
