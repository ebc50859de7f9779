"""The experiment matrix: valid, every run has its config at both scales, errors name the file."""
from pathlib import Path

import pytest
import yaml

from pipeline import matrix as mx


@pytest.fixture(scope='module')
def matrix():
    return mx.load()


def test_matrix_covers_every_table_cell_of_the_paper(matrix):
    cells = {cell for spec in matrix['finetune'].values() for cell in spec['tables']}
    expected = {'table1/' + r for r in ('baseline', 'ebl', 'mfs', 'loce', 'prior')}
    expected |= {'table2/alpha-' + a for a in ('0.8', '0.9', '0.95')}
    expected |= {'table3/bg-' + b for b in ('0.1', '0.01', '0.001')}
    expected |= {f'table4/k{k}-m{m}' for k, m in ((2, 2), (4, 4), (4, 8), (8, 4), (8, 8))}
    expected |= {'table5/' + r for r in ('r50_v05', 'r50_v1', 'r101_v1')}
    assert cells == expected


def test_shared_cells_are_trained_once(matrix):
    runs = mx.runs(matrix)
    loce = [name for name, spec in runs.items() if 'table1/loce' in spec['tables']]
    assert loce == ['loce_r50_v1']
    assert {'table2/alpha-0.9', 'table3/bg-0.01', 'table4/k8-m4', 'table5/r50_v1'} <= set(runs['loce_r50_v1']['tables'])


def test_four_pretrain_runs_and_figure4_panels(matrix):
    assert set(matrix['pretrain']) == {'r50_v1', 'r101_v1', 'r50_v05', 'r50_v1_rfs'}
    assert [matrix['figure4'][p]['run'] for p in 'abc'] == ['r50_v1', 'r50_v1_rfs', 'loce_r50_v1']
    assert len(matrix['scales']['full']['seeds']) == 3


@pytest.mark.parametrize('scale', ['full', 'smoke'])
def test_every_run_has_a_config_in_every_scale(matrix, scale):
    for name, spec in mx.runs(matrix).items():
        path = mx.config_path(matrix, scale, spec['config'])
        assert path.is_file(), f'{name}: {path} missing'


def test_smoke_twin_of_an_ablation_lives_in_configs_smoke(matrix):
    path = mx.config_path(matrix, 'smoke', 'ablations/loce-ebl_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1')
    assert path == mx.ROOT / 'configs/smoke/loce-ebl_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1-tiny.py'


def test_option_keys_exist_in_the_configs_they_override(matrix):
    from mmengine.config import Config

    for name, spec in mx.runs(matrix).items():
        for scale in ('full', 'smoke'):
            cfg = Config.fromfile(mx.config_path(matrix, scale, spec['config']))
            for key in spec['options']:
                node = cfg
                for part in key.split('.'):
                    assert part in node, f'{name} ({scale}): {key} not in config'
                    node = node[part]


def _write(tmp_path, mutate):
    data = yaml.safe_load(mx.MATRIX_FILE.read_text())
    mutate(data)
    path = Path(tmp_path) / 'experiments.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d['finetune']['loce_r50_v1'].update(pretrain='nope'), "unknown pretrain run 'nope'"),
    (lambda d: d['finetune']['ebl_r50_v1'].update(tables=['table1/loce']), 'table1/loce is filled by more than one run'),
    (lambda d: d['scales']['smoke'].update(seeds=[]), 'scales/smoke/seeds'),
    (lambda d: d['finetune']['ce_r50_v1'].update(tables=['table9/x']), 'finetune/ce_r50_v1/tables/0'),
    (lambda d: d['figure4']['a'].update(run='ghost'), "figure4/a: unknown run 'ghost'"),
])
def test_bad_matrix_fails_naming_the_file_and_the_place(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(SystemExit) as err:
        mx.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unknown_run_lists_the_known_ones(matrix):
    with pytest.raises(SystemExit, match='unknown run .ghost.*loce_r50_v1'):
        mx.run_spec(matrix, 'ghost')
