"""A run is its resolved config: relocated data, checked overrides, a hash that does not depend
on where the checkout is, and a file rewritten exactly when that hash changes."""
import copy
import os
import subprocess
import sys

import pytest
from mmengine.config import Config

from checkout import copy_checkout
from pipeline import matrix as mx
from pipeline import runconfig
from pipeline.runconfig import merge_checked, relocate_data


def _values(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _values(v, key)


@pytest.mark.parametrize('scale, run', [(scale, run) for scale in mx.load()['scales']
                                         for run in mx.runs_at(mx.load(), scale)])
def test_relocation_points_every_dataset_and_evaluator_at_the_new_root(scale, run):
    """A run's config at its scale (shrunk where the scale shrinks) names its data under one
    root: every path follows a relocation, none stays behind."""
    matrix = mx.load()
    spec = mx.run_spec(matrix, run, scale)
    cfg = runconfig.at_scale(matrix, scale, run)
    root = f'data/elsewhere/{spec["dataset"]}/'
    relocate_data(cfg, mx.ROOT / root)
    used = cfg.to_dict()
    roots = list(_values(used, 'data_root'))
    assert roots and all(r == root for r in roots), roots
    assert not [f for f in _values(used, 'ann_file') if f.startswith('data/')
                and not f.startswith(root)]
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.ann_file.startswith(root)
        assert evaluator.ann_file.endswith(f'{spec["dataset"]}_val.json')


def test_a_config_without_data_root_is_refused(tmp_path):
    path = tmp_path / 'bare.py'
    path.write_text("train_dataloader = dict(dataset=dict(ann_file='x.json'))\n")
    with pytest.raises(SystemExit, match='no top-level data_root'):
        relocate_data(Config.fromfile(path), tmp_path)


def test_resolved_config_names_everything_a_run_depends_on():
    matrix = mx.load()
    cfg = runconfig.resolve(matrix, 'smoke', 'loce_alpha0.8_r50_v1', 3)
    assert cfg.model.roi_head.indicator.alpha == 0.8          # the matrix option
    assert cfg.randomness.seed == 3
    assert cfg.work_dir == 'work/smoke/loce_alpha0.8_r50_v1/seed3'
    assert cfg.load_from == 'work/smoke/r50_v1/seed3/final.pth'
    parent = runconfig.config_sha256(runconfig.resolve(matrix, 'smoke', 'r50_v1', 3))
    assert cfg.pretrain_config_sha256 == parent
    assert not any(str(mx.ROOT) in str(v) for v in _values(cfg.to_dict(), 'data_root'))


def test_an_option_changes_the_hash_and_a_seed_too():
    matrix = mx.load()
    base = runconfig.config_sha256(runconfig.resolve(matrix, 'smoke', 'loce_r50_v1', 0))
    alpha = runconfig.config_sha256(runconfig.resolve(
        matrix, 'smoke', 'loce_r50_v1', 0, {'model.roi_head.indicator.alpha': 0.8}))
    seed = runconfig.config_sha256(runconfig.resolve(matrix, 'smoke', 'loce_r50_v1', 1))
    assert len({base, alpha, seed}) == 3


def test_file_is_rewritten_only_when_the_hash_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(mx, 'resolved_config', lambda s, r, k: tmp_path / r / f'seed{k}.py')
    matrix = mx.load()
    path, sha = runconfig.resolve_and_write(matrix, 'smoke', 'r50_v1', 0)
    os.utime(path, (1, 1))
    again, same = runconfig.resolve_and_write(matrix, 'smoke', 'r50_v1', 0)
    assert (again, same) == (path, sha) and path.stat().st_mtime == 1
    _, other = runconfig.resolve_and_write(matrix, 'smoke', 'r50_v1', 0, {'train_cfg.max_epochs': 2})
    assert other != sha and path.stat().st_mtime > 1
    loaded, loaded_sha = runconfig.load('smoke', 'r50_v1', 0)
    assert loaded_sha == other and loaded.train_cfg.max_epochs == 2


def test_resolved_configs_are_written_and_printed_without_yapf(tmp_path, monkeypatch):
    """yapf took about 1 s a config (80 % of planning the full scale, and again in each Runner):
    the resolved file, and the config a stage loads from it, print without it, as the same
    dict."""
    import mmengine.config.config as mmengine_config

    def refuse(*args, **kwargs):
        raise AssertionError('yapf called')
    monkeypatch.setattr(mmengine_config, 'FormatCode', refuse)
    monkeypatch.setattr(mx, 'resolved_config', lambda s, r, k: tmp_path / r / f'seed{k}.py')
    matrix = mx.load()
    path, sha = runconfig.resolve_and_write(matrix, 'smoke', 'loce_r50_v1', 0)
    loaded, loaded_sha = runconfig.load('smoke', 'loce_r50_v1', 0)
    assert loaded_sha == sha == runconfig.config_sha256(runconfig.resolve(matrix, 'smoke',
                                                                          'loce_r50_v1', 0))
    dumped = tmp_path / 'dumped.py'
    dumped.write_text(copy.deepcopy(loaded).pretty_text)  # what the Runner logs and dumps
    assert runconfig.config_sha256(Config.fromfile(str(dumped))) == sha


def test_a_hand_edited_resolved_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(mx, 'resolved_config', lambda s, r, k: tmp_path / r / f'seed{k}.py')
    path, _ = runconfig.resolve_and_write(mx.load(), 'smoke', 'r50_v1', 0)
    path.write_text(path.read_text().replace('max_epochs=1', 'max_epochs=5'))
    with pytest.raises(SystemExit, match='does not match its config_sha256'):
        runconfig.load('smoke', 'r50_v1', 0)


def test_an_unknown_override_key_is_refused_with_the_nearest_ones():
    cfg = Config(dict(auto_scale_lr=dict(enable=True, base_batch_size=16)))
    with pytest.raises(SystemExit) as err:
        merge_checked(cfg, {'auto_scale_lr.enabel': False}, '--cfg-options')
    message = str(err.value)
    assert "'auto_scale_lr.enabel'" in message and 'auto_scale_lr.enable' in message
    assert "'+auto_scale_lr.enabel'" in message  # and how to add it on purpose
    assert cfg.auto_scale_lr.enable is True


def test_a_key_marked_new_is_added():
    cfg = Config(dict(model=dict(type='X')))
    merge_checked(cfg, {'+model.extra': 3, 'model.type': 'Y'}, 'test')
    assert cfg.model == dict(type='Y', extra=3)


def test_a_matrix_option_typo_names_the_matrix_and_the_run(monkeypatch):
    matrix = mx.load()
    matrix['finetune']['loce_alpha0.8_r50_v1']['options'] = {'model.roi_head.indicator.alpah': 0.8}
    with pytest.raises(SystemExit, match=r"experiments.yaml: options of run 'loce_alpha0.8_r50_v1'.*"
                                         r"model\.roi_head\.indicator\.alpha"):
        runconfig.resolve(matrix, 'smoke', 'loce_alpha0.8_r50_v1', 0)


def test_two_checkouts_in_different_folders_give_the_same_hashes(tmp_path):
    hashes = []
    for name in ('a', 'deeper/b'):
        clone = copy_checkout(tmp_path / name, results=False)
        out = subprocess.run([sys.executable, '-m', 'pipeline', 'resolve', '--scale', 'smoke',
                              '--run', 'loce_r50_v1'], cwd=clone, capture_output=True, text=True,
                             check=True).stdout
        hashes.append(out.split())
        text = (clone / 'work/smoke/configs/loce_r50_v1/seed0.py').read_text()
        assert str(clone) not in text
    assert hashes[0] == hashes[1] and len(hashes[0]) == 2


def _without_scale(tree, scale):
    """The resolved config as a tree, with `scale`'s folder names written as 'SCALE'."""
    if isinstance(tree, dict):
        return {k: _without_scale(v, scale) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_without_scale(v, scale) for v in tree]
    if isinstance(tree, str):
        return tree.replace(f'data/{scale}/', 'data/SCALE/').replace(f'work/{scale}/', 'work/SCALE/')
    return tree


@pytest.mark.parametrize('run', list(mx.runs_at(mx.load(), 'rehearsal')))
def test_the_rehearsal_changes_nothing_but_its_length_and_paths(run):
    """Issue #23: a rehearsal run is its full run, shortened where the matrix's `length` says
    and nowhere else; the shortening is written in the config."""
    matrix = mx.load()
    length = mx.scale(matrix, 'rehearsal')['length']
    full = _without_scale(runconfig.resolve(matrix, 'full', run, 0).to_dict(), 'full')
    rehearsal = _without_scale(runconfig.resolve(matrix, 'rehearsal', run, 0).to_dict(),
                               'rehearsal')
    assert rehearsal.pop('shortened') == dict(length, why="scale 'rehearsal' rehearses code "
                                                          'paths; not a result')
    key = 'max_epochs' if 'Epoch' in full['train_cfg']['type'] else 'max_iters'
    assert full['train_cfg'][key] > rehearsal['train_cfg'][key] == (
        length['epochs'] if key == 'max_epochs' else length['iterations'])
    full['train_cfg'][key] = rehearsal['train_cfg'][key]
    for hook in rehearsal.get('custom_hooks', []):
        if hook['type'] == 'MemoryWarmupHook':
            assert hook.pop('max_images') == length['warmup_images']
    full.pop('pretrain_config_sha256', None), rehearsal.pop('pretrain_config_sha256', None)
    assert rehearsal == full
