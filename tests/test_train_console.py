"""What `python -m pipeline train` says: a progress line, warnings and errors, and where the
full log is, while mmengine's own log goes to its file (and to the console too with --verbose);
the notices that said nothing are gone at their source, other warnings stay. Also the loss curve
read back from mmengine's scalars, the figure drawn from it, and --tensorboard without its
package."""
import json
import logging
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from pipeline import matrix as mx
from pipeline import train
from pipeline.aggregate import loss_curves
from pipeline.train_hooks import MMENGINE_NOTICES, ProgressHook, not_an_mmengine_notice

CLI = [sys.executable, '-m', 'pipeline']
SHORT = '+train_dataloader.dataset.indices=4'  # 2 iterations: the console, not the science
QUIET, VERBOSE = 51, 52  # scratch seeds, removed afterwards


def _train(seed, *extra):
    return subprocess.run([*CLI, 'train', '--scale', 'smoke', '--run', 'r50_v1', '--seed',
                           str(seed), '--unlisted-seed', '--cfg-options', SHORT, *extra],
                          cwd=mx.ROOT, capture_output=True, text=True)


@pytest.fixture(scope='module')
def trained():
    """A tiny training, its rerun after losing final.pth (a resume: it loads a checkpoint), and
    the same training with --verbose."""
    if not (mx.ROOT / 'data' / 'smoke' / 'lvis_v1').is_dir():
        subprocess.run([*CLI, 'data', '--scale', 'smoke'], cwd=mx.ROOT, check=True)
    works = {seed: mx.work_dir('smoke', 'r50_v1', seed) for seed in (QUIET, VERBOSE)}
    try:
        for work in works.values():
            shutil.rmtree(work, ignore_errors=True)
        done = dict(quiet=_train(QUIET))
        for name in ('final.pth', 'train.json'):
            (works[QUIET] / name).unlink(missing_ok=True)
        done.update(resumed=_train(QUIET), verbose=_train(VERBOSE, '--verbose'))
        for name, run in done.items():
            assert run.returncode == 0, (name, run.stderr[-3000:])
        yield dict(done, work=works[QUIET])
    finally:
        for seed, work in works.items():
            for path in work.parent.glob(f'{work.name}*'):  # set-aside copies too
                shutil.rmtree(path)
            mx.resolved_config('smoke', 'r50_v1', seed).unlink(missing_ok=True)


def test_the_console_shows_progress_and_the_log_file_has_mmengines_lines(trained):
    lines = trained['quiet'].stdout.splitlines()
    assert all(line.startswith('[train] r50_v1 seed 51: ') for line in lines), lines
    progress = [line for line in lines if ': iter ' in line]
    assert progress and progress[-1].startswith('[train] r50_v1 seed 51: iter 2/2 (100%), loss ')
    assert progress[-1].endswith(', ETA 0s')
    log = lines[-1].rsplit(', log ', 1)[1]
    assert lines[0] == f"[train] r50_v1 seed 51: training; mmengine's log: {log}"
    assert lines[-1].startswith('[train] r50_v1 seed 51: done; final checkpoint '
                                'work/smoke/r50_v1/seed51/final.pth, log work/smoke/r50_v1/seed51/')
    text = (mx.ROOT / log).read_text()
    assert 'System environment' in text and 'Epoch(train) [1][2/2]' in text
    curve = train.loss_curve(trained['work'])  # mmengine's scalars, two starts
    assert curve['iterations'] == [2] and {'loss', 'loss_cls', 'loss_mask'} <= set(curve)


def test_verbose_prints_mmengines_log_as_before(trained):
    out = trained['verbose'].stdout
    assert 'System environment' in out and 'Epoch(train) [1][2/2]' in out
    assert ': iter ' not in out and '[train] r50_v1 seed 52: done; final checkpoint' in out


def test_the_noise_is_gone_from_console_and_log(trained):
    everything = ''.join(run.stdout + run.stderr for name, run in trained.items() if name != 'work')
    everything += ''.join(log.read_text() for log in trained['work'].glob('*/*.log'))
    assert 'resuming from' in trained['resumed'].stdout  # it did load a checkpoint
    for noise in (*MMENGINE_NOTICES, 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected'):
        assert noise not in everything


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = []

    def emit(self, record):
        self.seen.append(record.getMessage())


def test_only_mmengines_two_notices_are_dropped():
    from mmengine.fileio.file_client import FileClient, HardDiskBackend
    from mmengine.logging import MMLogger, print_log

    logger = MMLogger.get_instance('test_train_console')  # the current one: print_log's
    collect = _Collect()
    logger.handlers = [collect]
    FileClient('disk'), HardDiskBackend()  # what CheckpointHook's FileClient.infer_client makes
    assert set(collect.seen) == MMENGINE_NOTICES  # the exact messages of this mmengine
    collect.seen.clear()
    logger.addFilter(not_an_mmengine_notice)
    FileClient('disk'), HardDiskBackend()
    print_log('"Foo" will be deprecated in future.', logger='current', level=logging.WARNING)
    assert collect.seen == ['"Foo" will be deprecated in future.']


def test_progress_prints_the_first_and_last_iterations_and_every_so_often(capsys):
    hook = ProgressHook(name='r50_v1 seed 0', every_s=3600)
    runner = SimpleNamespace(rank=0, iter=0, max_iters=4)
    hook.before_train(runner)
    for i, loss in enumerate((4.0, 3.0, 2.0, 1.0)):
        runner.iter = i
        hook.after_train_iter(runner, i, outputs=dict(loss=torch.tensor(loss, requires_grad=True)))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith('[train] r50_v1 seed 0: iter 1/4 (25%), '
                                                   'loss 4.000, ETA ')
    assert lines[1] == '[train] r50_v1 seed 0: iter 4/4 (100%), loss 2.000, ETA 0s'  # 3, 2, 1


def _scalars(path, rows):
    path.mkdir(parents=True)
    (path / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in rows))


def test_loss_curve_merges_a_resumed_runs_scalars(tmp_path):
    first = tmp_path / '20260101_000000' / 'vis_data'
    then = tmp_path / '20260101_010000' / 'vis_data'
    _scalars(first, [dict(lr=0.01, loss=3.0, loss_cls=2.0, acc=50.0, iter=10, step=10),
                     dict(loss=2.0, loss_cls=1.5, step=20), dict(loss=1.9, loss_cls=1.4, step=30)])
    with (first / 'scalars.json').open('a') as f:
        f.write('{"loss": 1.8, "lo')  # killed mid-line
    # resumed from the checkpoint at 20: iteration 30 is trained, and logged, again
    _scalars(then, [dict(loss=1.7, loss_cls=1.3, step=30), dict(loss=1.2, loss_cls=0.9, step=40),
                    {'lvis/bbox_AP': 0.1, 'step': 1}])  # not a training line
    assert train.loss_curve(tmp_path) == dict(iterations=[10, 20, 30, 40],
                                              loss=[3.0, 2.0, 1.7, 1.2],
                                              loss_cls=[2.0, 1.5, 1.3, 0.9])
    assert train.loss_curve(tmp_path, points=3) == dict(iterations=[10, 30, 40],
                                                        loss=[3.0, 1.7, 1.2],
                                                        loss_cls=[2.0, 1.3, 0.9])
    assert train.loss_curve(tmp_path / 'nothing') is None


def test_loss_curves_figure_has_a_panel_per_run_with_a_curve():
    curve = dict(iterations=[10, 20], loss=[2.0, 1.0])
    summary = dict(results=dict(metrics={
        'r50_v1': {0: dict(diagnostics=dict(loss_curve=curve)),
                   1: dict(diagnostics=dict(loss_curve=dict(curve, loss=[2.1, 1.1])))},
        'loce_r50_v1': {0: dict(diagnostics=dict(indicator_trace={}))}}))  # made before: skipped
    data = loss_curves.curves(summary)
    assert list(data) == ['r50_v1'] and list(data['r50_v1']) == [0, 1]
    fig = loss_curves.figure(data)
    drawn = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in drawn] == ['r50_v1'] and len(drawn[0].lines) == 2
    png = loss_curves.render_all(summary)['figures/loss_curves.png']
    assert png.startswith(b'\x89PNG')


def test_tensorboard_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)  # import fails, as when missing
    with pytest.raises(SystemExit, match=r'^--tensorboard needs the tensorboard package '
                                         r'\(.*\); pip install tensorboard$'):
        train.train('smoke', 'r50_v1', 0, tensorboard=True)
