"""The train stage fails loudly and loses nothing: stale work dirs set aside, unreadable
checkpoints skipped, bad data and non-finite losses stopped with a message naming the file or
term, SIGTERM honoured between iterations, a full disk never corrupting a file."""
import errno
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from pipeline import atomic, train
from pipeline import matrix as mx
from pipeline.train_hooks import (SIGTERM_EXIT, FiniteLossHook, StopOnSigtermHook,
                                  check_dataset)


def test_a_work_dir_of_another_identity_is_moved_aside_intact(tmp_path, capsys):
    work = tmp_path / 'r50_v1' / 'seed0'
    work.mkdir(parents=True)
    (work / 'final.pth').write_bytes(b'old weights')
    made = dict(config_sha256='a' * 64, code_sha256='c' * 64, data_sha256='d' * 64)
    now = dict(made, config_sha256='b' * 64)
    assert train.set_aside(work, made, made) is None and work.is_dir()
    dest = train.set_aside(work, made, now)
    assert not work.exists() and (dest / 'final.pth').read_bytes() == b'old weights'
    assert dest.name.startswith('seed0.stale-') and dest.name.endswith('-aaaaaaaaaaaa')
    line = capsys.readouterr().out
    assert 'another config' in line and 'moved it to' in line and line.count('\n') == 1


def test_a_work_dir_without_identity_is_moved_aside(tmp_path):
    work = tmp_path / 'seed0'
    work.mkdir()
    (work / 'epoch_1.pth').write_bytes(b'x')
    assert train.set_aside(work, None, dict(config_sha256='b' * 64)) is not None


def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    torch.save({'meta': {'epoch': 1}}, tmp_path / 'epoch_1.pth')
    torch.save({'meta': {'epoch': 2}}, tmp_path / 'epoch_2.pth')
    data = (tmp_path / 'epoch_2.pth').read_bytes()
    (tmp_path / 'epoch_2.pth').write_bytes(data[:len(data) // 2])  # killed while writing
    assert train.good_checkpoint(tmp_path) == tmp_path / 'epoch_1.pth'
    assert (tmp_path / 'epoch_2.pth.corrupt').is_file()
    assert 'epoch_2.pth cannot be loaded' in capsys.readouterr().out
    (tmp_path / 'epoch_1.pth').write_bytes(b'garbage')
    assert train.good_checkpoint(tmp_path) is None


def test_malformed_annotation_json_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(mx, 'ROOT', tmp_path)
    bad = tmp_path / 'data' / 'lvis_v1_train.json'
    bad.parent.mkdir()
    bad.write_text('{"images": [')
    with pytest.raises(SystemExit, match=r'data/lvis_v1_train.json: not a readable annotation '
                                         r'file .*rerun the data stage \(`python -m pipeline '
                                         r'data --scale proxy`\)'):
        train.check_annotations([bad], 'proxy')


class _Dataset:
    def __init__(self, paths, classes, filter_cfg=None):
        self.paths, self.metainfo = paths, dict(classes=classes)
        self.ann_file, self.filter_cfg = 'annotations/train.json', filter_cfg

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, i):
        return dict(img_path=self.paths[i])


def _model(num_classes):
    return SimpleNamespace(roi_head=SimpleNamespace(bbox_head=SimpleNamespace(num_classes=num_classes)))


def test_data_check_names_missing_images_class_mismatch_and_empty_sets(tmp_path):
    image = tmp_path / 'a.jpg'
    image.write_bytes(b'jpg')
    check_dataset(_Dataset([str(image)], ('a', 'b')), _model(2), 'the training set', 'smoke')
    with pytest.raises(SystemExit, match=r'annotations/train.json: 1 listed images are missing '
                                         r'on disk \(first: .*gone.jpg\); rerun the data stage '
                                         r'\(`python -m pipeline data --scale smoke`\)'):
        check_dataset(_Dataset([str(image), str(tmp_path / 'gone.jpg')], ('a', 'b')), _model(2),
                      'x', 'smoke')
    with pytest.raises(SystemExit, match='2 categories, but the model predicts num_classes=3; set '
                                         'model.roi_head.bbox_head.num_classes'):
        check_dataset(_Dataset([str(image)], ('a', 'b')), _model(3), 'x', 'smoke')
    with pytest.raises(SystemExit, match='the training set is empty after filtering'):
        check_dataset(_Dataset([], ('a', 'b'), dict(min_size=32)), _model(2), 'the training set',
                      'smoke')


def test_a_non_finite_loss_stops_naming_run_seed_iteration_and_term():
    hook = FiniteLossHook(run='loce_r50_v1', seed=2)
    runner = SimpleNamespace(iter=41)
    hook.after_train_iter(runner, 0, outputs={'loss_cls': torch.tensor(0.3), 'acc': float('nan')})
    with pytest.raises(SystemExit, match=r"run 'loce_r50_v1' seed 2: loss term loss_bbox is nan "
                                         r'at iteration 42; .*nothing is published'):
        hook.after_train_iter(runner, 0, outputs={'loss_cls': torch.tensor(0.3),
                                                  'loss_bbox': torch.tensor(float('nan'))})


def test_sigterm_is_honoured_at_the_next_iteration_boundary(tmp_path):
    hook = StopOnSigtermHook()
    logs = []
    runner = SimpleNamespace(iter=7, work_dir=str(tmp_path),
                             logger=SimpleNamespace(warning=logs.append))
    hook.before_run(runner)
    try:
        hook.after_train_iter(runner, 0)
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the process goes on
        with pytest.raises(SystemExit) as stop:
            hook.before_train_iter(runner, 0)
        assert stop.value.code == SIGTERM_EXIT
        assert logs == ['SIGTERM: stopping at iteration 7; no checkpoint written yet; a rerun '
                        'starts from the beginning']
        for name in ('iter_94.pth', 'iter_188.pth', 'last_checkpoint'):
            (tmp_path / name).write_bytes(b'')
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(SystemExit):
            hook.after_train_iter(runner, 0)
        assert logs[1] == 'SIGTERM: stopping at iteration 7; a rerun resumes from iter_188.pth'
    finally:
        hook.after_run(runner)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = atomic.write_json(tmp_path / 'metrics.json', {'AP': 1.0})
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(atomic.os, 'fdopen', lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(SystemExit, match=r'metrics.json: no space left on device .* previous '
                                         r'file is unchanged'):
        atomic.write_json(path, {'AP': 2.0})
    assert json.loads(path.read_text()) == {'AP': 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ['metrics.json']


def test_the_cli_prints_no_pkg_resources_warning():
    done = subprocess.run([sys.executable, '-m', 'pipeline', 'resolve', '--scale', 'smoke',
                           '--run', 'r50_v1'], cwd=mx.ROOT, capture_output=True, text=True,
                          check=True)
    assert 'pkg_resources is deprecated' not in done.stderr
    assert done.stdout.startswith('work/smoke/configs/r50_v1/seed0.py ')
