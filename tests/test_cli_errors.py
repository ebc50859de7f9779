"""Bad input at the keyboard ends in one line naming the file or the fix, never a traceback: the
results end (compare, aggregate), the matrix's YAML, Ctrl-C and SIGTERM, --cfg-options, seeds
and the per-run lock; `clean` and the closing lines of data and aggregate. Nothing here trains:
the train stage is replaced by a fake where a test gets that far."""
import json
import os
import subprocess
import sys

import pytest

import pipeline.aggregate
import pipeline.data.subset
import pipeline.data.synthetic
import pipeline.train
from pipeline import determinism, published, runconfig, runlock
from pipeline import matrix as mx
from pipeline.__main__ import main

SCALE, RUN, FINETUNE = 'smoke', 'r50_v1', 'loce_r50_v1'
FIX = 'delete it and re-run the stage that writes it'


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """main() in this process: no CPU pin (torch may already be imported here), no fork server,
    and the per-run locks under tmp_path."""
    monkeypatch.setattr(determinism, 'apply', lambda *args, **kwargs: None)
    monkeypatch.delenv('LOCE_FORKSERVER', raising=False)
    monkeypatch.chdir(mx.ROOT)
    monkeypatch.setattr(runlock, 'lock_file',
                        lambda scale, run, seed: tmp_path / 'locks' / run / f'seed{seed}.lock')
    return main


class Calls(list):
    then = None  # what the fake training raises


@pytest.fixture
def fake_train(monkeypatch):
    """pipeline.train.train replaced: records its calls, then raises `then` if set."""
    calls = Calls()

    def train(scale, run, seed, **kwargs):
        calls.append((scale, run, seed))
        if calls.then:
            raise calls.then
    monkeypatch.setattr(pipeline.train, 'train', train)
    return calls


def _one_line(err: str) -> str:
    assert 'Traceback' not in err and err.strip().count('\n') == 0, err
    return err.strip()


def test_compare_on_a_truncated_metrics_file_names_it_and_the_fix(cli, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(mx, 'results_dir', lambda scale: tmp_path / 'fresh')
    monkeypatch.setattr(mx, 'published_dir', lambda scale: tmp_path / 'published')
    bad = mx.metrics_path(SCALE, RUN, 0, tmp_path / 'fresh')
    bad.parent.mkdir(parents=True)
    bad.write_text('{"run": "r50_v1", "seed": 0, "bbox": {"AP": 1')
    assert cli(['compare', '--scale', SCALE]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f'{bad}: malformed JSON' in line and line.endswith(FIX)


def test_compare_on_a_malformed_analysis_file_names_it_and_the_fix(cli, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(mx, 'results_dir', lambda scale: tmp_path / 'fresh')
    monkeypatch.setattr(mx, 'published_dir', lambda scale: tmp_path / 'published')
    bad = mx.analysis_path(SCALE, RUN, 0, tmp_path / 'published')
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps(dict(run=RUN, seed=0, provenance={}, classes={})))
    assert cli(['compare', '--scale', SCALE]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f"{bad}: 'classes' is not a list; {FIX}" in line


def test_aggregate_on_a_truncated_metrics_file_names_it_and_the_fix(cli, tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(mx, 'results_dir', lambda scale: tmp_path)
    bad = mx.metrics_path(SCALE, RUN, 0, tmp_path)
    bad.parent.mkdir(parents=True)
    bad.write_text('{"run": ')
    assert cli(['aggregate', '--scale', SCALE]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f'[aggregate] {bad}: malformed JSON') and line.endswith(FIX)


def test_aggregate_ends_with_a_line_saying_what_it_wrote(cli, monkeypatch, capsys):
    written = [mx.results_dir(SCALE) / 'REPORT.md', mx.results_dir(SCALE) / 'tables/table1.md']
    monkeypatch.setattr(pipeline.aggregate, 'aggregate',
                        lambda scale: dict(written=written, missing=[{}]))
    assert cli(['aggregate', '--scale', SCALE]) == 0
    assert capsys.readouterr().out == (
        '[aggregate] smoke: wrote 2 files (tables/, figures/, ap/, REPORT.md) under '
        'work/smoke/results; 1 expected result files missing or stale (listed in REPORT.md)\n')


def test_data_ends_with_a_line_saying_what_it_wrote(cli, monkeypatch, capsys):
    monkeypatch.setattr(pipeline.data.synthetic, 'synthesize', lambda root, **kwargs: None)
    monkeypatch.setattr(pipeline.data.subset, 'subset', lambda src, dst, **kwargs: None)
    assert cli(['data', '--scale', SCALE]) == 0
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and out.startswith('[data] smoke: synthesized lvis_v1')
    assert 'under data/smoke, with fine-tune subsets of 100 images' in out


def test_a_yaml_syntax_error_in_the_matrix_names_file_line_and_column(tmp_path):
    lines = mx.MATRIX_FILE.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith('seeds:'))
    lines[at] += ']'  # one bracket too many, at the end of the line
    path = tmp_path / 'experiments.yaml'
    path.write_text('\n'.join(lines))
    with pytest.raises(SystemExit) as stop:
        mx.load(path)
    message = str(stop.value.code)
    assert message.startswith(f'{path}:{at + 1}:{len(lines[at])}: not valid YAML (')
    assert '<unicode string>' not in message and '\n' not in message


def test_ctrl_c_in_training_says_a_rerun_starts_afresh_without_a_checkpoint(
        cli, fake_train, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mx, 'ROOT', tmp_path)
    fake_train.then = KeyboardInterrupt()
    assert cli(['train', '--scale', SCALE, '--run', RUN]) == 130
    line = _one_line(capsys.readouterr().err)
    assert line == ('[train] r50_v1 seed 0 interrupted (Ctrl-C); work/smoke/r50_v1/seed0 has no '
                    'checkpoint yet, so `python -m pipeline train --scale smoke --run r50_v1` '
                    'starts afresh')


def test_ctrl_c_in_training_names_the_checkpoint_a_rerun_resumes_from(
        cli, fake_train, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mx, 'ROOT', tmp_path)
    work = mx.work_dir(SCALE, RUN, 0)
    work.mkdir(parents=True)
    for name in ('epoch_2.pth', 'epoch_10.pth', 'final.pth.tmp'):
        (work / name).write_bytes(b'x')
    fake_train.then = KeyboardInterrupt()
    assert cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '0']) == 130
    line = _one_line(capsys.readouterr().err)
    assert line.endswith('`python -m pipeline train --scale smoke --run r50_v1 --seed 0` '
                         'resumes from the last checkpoint, work/smoke/r50_v1/seed0/epoch_10.pth')


def test_sigterm_before_the_first_checkpoint_says_a_rerun_starts_afresh(
        cli, fake_train, tmp_path, monkeypatch, capsys):
    """The hook's log line (pipeline/train_hooks.py) says a rerun resumes; this one says
    whether there is anything to resume from."""
    monkeypatch.setattr(mx, 'ROOT', tmp_path)
    fake_train.then = SystemExit(143)
    with pytest.raises(SystemExit) as stop:
        cli(['train', '--scale', SCALE, '--run', RUN])
    assert stop.value.code == 143
    assert 'stopped by SIGTERM; work/smoke/r50_v1/seed0 has no checkpoint yet, so' \
        in _one_line(capsys.readouterr().err)


def test_ctrl_c_in_another_stage_is_one_line_and_exit_130(cli, monkeypatch, capsys):
    def interrupted(scale):
        raise KeyboardInterrupt
    monkeypatch.setattr(published, 'compare', interrupted)
    assert cli(['compare', '--scale', SCALE]) == 130
    assert _one_line(capsys.readouterr().err) == (
        '[compare] interrupted (Ctrl-C); rerun `python -m pipeline compare --scale smoke` to do '
        'it again')


def test_an_override_of_the_wrong_type_is_refused_naming_key_value_and_type(cli):
    """Through the real train stage: refused while resolving, before anything is written."""
    with pytest.raises(SystemExit, match=r"--cfg-options: optim_wrapper.optimizer.lr='abc' is of "
                                         r'type str; the config has 0\.\d+ there, of type '
                                         'float, and an override must have its type'):
        cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '0', '--cfg-options',
             'optim_wrapper.optimizer.lr=abc'])
    for fine in ({'optim_wrapper.optimizer.lr': 1}, {'train_cfg.val_interval': None}):
        runconfig.resolve(mx.load(), SCALE, RUN, 0, fine)  # an int is a float; None clears
    with pytest.raises(SystemExit, match='train_cfg.max_epochs=2.5 is of type float; the config '
                                         'has \\d+ there, of type int'):
        runconfig.resolve(mx.load(), SCALE, RUN, 0, {'train_cfg.max_epochs': 2.5})


def test_load_from_on_a_fine_tune_is_refused_naming_the_pretrain_run():
    with pytest.raises(SystemExit) as stop:
        runconfig.resolve(mx.load(), SCALE, FINETUNE, 0, {'load_from': 'other.pth'})
    message = stop.value.code
    assert message.startswith(f"--cfg-options load_from: '{FINETUNE}' is a fine-tune run")
    assert "pretrain run 'r50_v1' (work/smoke/r50_v1/seed0/final.pth)" in message
    assert 'name that run in `pretrain:` of a fine-tune run in pipeline/experiments.yaml' \
        in message


def test_evaluate_out_into_a_missing_directory_is_refused_before_evaluating(cli, tmp_path,
                                                                           monkeypatch):
    import pipeline.evaluate
    monkeypatch.setattr(pipeline.evaluate, 'evaluate', lambda *a, **k: pytest.fail('evaluated'))
    out = tmp_path / 'nowhere' / 'dets'
    with pytest.raises(SystemExit) as stop:
        cli(['evaluate', '--scale', SCALE, '--run', RUN, '--seed', '0', '--out', str(out)])
    assert _one_line(stop.value.code) == (f'evaluate: --out {out}: no directory '
                                          f'{out.parent}; create it first')


def test_a_seed_the_scale_does_not_list_is_refused_with_the_valid_ones(cli, fake_train):
    with pytest.raises(SystemExit, match=r'--seed 7: the smoke scale runs r50_v1 with seed\(s\) '
                                         r'0 \(experiments.yaml\); give one of them, or add '
                                         '--unlisted-seed'):
        cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '7'])
    assert fake_train == []
    assert cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '7', '--unlisted-seed']) == 0
    assert fake_train == [(SCALE, RUN, 7)]


def test_a_second_train_of_the_same_run_and_seed_exits_naming_lock_and_holder(cli, fake_train):
    path = runlock.lock_file(SCALE, RUN, 0)
    with runlock.held(SCALE, RUN, 0):
        assert path.read_text() == f'{os.getpid()}\n'
        with pytest.raises(SystemExit, match=f'{path}: r50_v1 seed 0 \\(smoke\\) is being trained '
                                             f'by pid {os.getpid()}; wait for it'):
            cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '0'])
    assert fake_train == [] and path.read_text() == ''
    assert cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '0']) == 0
    assert fake_train == [(SCALE, RUN, 0)]


def test_a_lock_left_by_a_dead_process_is_taken_over_saying_so(cli, fake_train, capsys):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True).stdout.strip()
    path = runlock.lock_file(SCALE, RUN, 0)
    path.parent.mkdir(parents=True)
    path.write_text(f'{dead}\n')
    assert cli(['train', '--scale', SCALE, '--run', RUN, '--seed', '0']) == 0
    assert f'taking over the lock left by pid {dead}, which ended' in capsys.readouterr().out
    assert fake_train == [(SCALE, RUN, 0)]


def test_clean_lists_set_aside_work_dirs_with_sizes_and_removes_them_only_with_yes(
        cli, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mx, 'ROOT', tmp_path)
    run_dir = tmp_path / 'work' / SCALE / RUN
    stale = run_dir / 'seed0.stale-20250101T000000Z-0123456789ab'
    stale.mkdir(parents=True)
    (stale / 'epoch_1.pth').write_bytes(b'x' * 3000)
    os.link(stale / 'epoch_1.pth', stale / 'final.pth')  # as train links them: counted once
    (run_dir / 'seed0').mkdir()
    (run_dir / 'seed0' / 'epoch_1.pth').write_bytes(b'kept')
    assert cli(['clean', '--scale', SCALE]) == 0
    out = capsys.readouterr().out
    assert f'    2.9 KB  work/smoke/r50_v1/{stale.name}\n' in out
    assert ('[clean] dry run, nothing removed: 1 set-aside work dirs, 2.9 KB; `python -m '
            'pipeline clean --scale smoke --yes` removes them') in out
    assert stale.is_dir()
    assert cli(['clean', '--scale', SCALE, '--yes']) == 0
    assert '[clean] removed 1 set-aside work dirs, 2.9 KB' in capsys.readouterr().out
    assert not stale.exists() and (run_dir / 'seed0' / 'epoch_1.pth').is_file()
    assert cli(['clean', '--scale', SCALE]) == 0
    assert capsys.readouterr().out == '[clean] no set-aside work dirs under work/smoke\n'


def test_a_missing_pretrain_checkpoint_names_the_command_that_trains_it():
    path = mx.work_dir(SCALE, RUN, 99) / 'final.pth'
    with pytest.raises(SystemExit, match='train it first \\(`python -m pipeline train --scale '
                                         'smoke --run r50_v1 --seed 99`\\)'):
        runconfig.require_own_checkpoint(path, "pretrain run 'r50_v1'")
