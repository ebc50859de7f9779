"""The experiment matrix: valid, every run has its config at both scales, errors name the file."""
from pathlib import Path

import pytest
import yaml

from pipeline import matrix as mx


@pytest.fixture(scope='module')
def matrix():
    return mx.load()


def test_matrix_covers_every_table_cell_of_the_paper(matrix):
    """Every row of Tables 1-5 is run but Forest R-CNN (a citation: mmdet 1.x code), plus the
    rows beyond the paper (Table 1's controlled CE, Table 5's Seesaw peer and ECM)."""
    cells = {cell for spec in mx.runs(matrix).values() for cell in spec['tables']}
    paper = yaml.safe_load((mx.ROOT / 'pipeline' / 'paper.yaml').read_text())['tables']
    rows = {f'{table}/{row}' for table, spec in paper.items() for row in spec['rows']}
    assert cells == rows - {'table5/r50_v05/forest_rcnn'}
    beyond = {f'{t}/{r}' for t, spec in paper.items() for r, v in spec['rows'].items()
              if v.get('beyond_paper')}
    assert beyond == {'table1/ce_decoupled', 'table5/r50_v1/seesaw_normed', 'table5/r50_v1/ecm'}
    assert mx.runs(matrix)['r50_v1_30e']['tables'] == ['table1/baseline']
    assert mx.runs(matrix)['ce_r50_v1']['tables'] == ['table1/ce_decoupled']
    assert 'table5/r50_v1/rfs' in mx.runs(matrix)['r50_v1_rfs']['tables']  # trained once


def test_proxy_runs_table1_and_figure4_with_shared_stage1(matrix):
    runs = mx.runs_at(matrix, 'proxy')
    table1 = {c for spec in runs.values() for c in spec['tables']}
    assert {c.split('/')[0] for c in table1} == {'table1'}
    assert table1 == {f'table1/{r}' for r in ('baseline', 'ce_decoupled', 'ebl', 'mfs', 'loce',
                                              'prior')}
    assert {p['run'] for p in matrix['figure4'].values()} <= set(runs)
    assert mx.run_seeds(matrix, 'proxy', 'r50_v1') == [0]       # shared stage 1
    assert mx.run_seeds(matrix, 'proxy', 'r50_v1_rfs') == [0]   # its Table 5 cell is not here
    assert mx.run_seeds(matrix, 'proxy', 'r50_v1_30e') == [0, 1, 2]
    assert mx.pretrain_seed(matrix, 'proxy', 2) == 0 and mx.pretrain_seed(matrix, 'smoke', 2) == 2


def test_tables_1_to_4_leave_table5_baselines_out(matrix):
    runs = mx.runs_at(matrix, 'full', ['table1', 'table2', 'table3', 'table4'])
    assert not any(name.startswith(('eql', 'bags', 'balms', 'seesaw', 'ecm')) for name in runs)
    assert {'r50_v1', 'r50_v1_30e', 'loce_r50_v1', 'r50_v1_rfs'} <= set(runs)


def test_shared_cells_are_trained_once(matrix):
    runs = mx.runs(matrix)
    loce = [name for name, spec in runs.items() if 'table1/loce' in spec['tables']]
    assert loce == ['loce_r50_v1']
    assert {'table2/alpha-0.9', 'table3/bg-0.01', 'table4/k8-m4', 'table5/r50_v1'} <= set(runs['loce_r50_v1']['tables'])


def test_stage1_runs_and_figure4_panels(matrix):
    assert {'r50_v1', 'r101_v1', 'r50_v05', 'r50_v1_rfs'} <= set(matrix['pretrain'])
    assert [matrix['figure4'][p]['run'] for p in 'abc'] == ['r50_v1', 'r50_v1_rfs', 'loce_r50_v1']
    assert len(matrix['scales']['full']['seeds']) == 3


@pytest.mark.parametrize('scale', list(mx.load()['scales']))
def test_every_run_has_a_config_in_every_scale(matrix, scale):
    for name, spec in mx.runs_at(matrix, scale).items():
        path = mx.config_path(matrix, scale, spec['config'])
        assert path.is_file(), f'{name}: {path} missing'


def test_a_run_has_one_config_file_at_every_scale(matrix):
    stem = 'ablations/loce-ebl_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1'
    for scale in matrix['scales']:
        assert mx.config_path(matrix, scale, stem) == mx.ROOT / f'configs/{stem}.py'
    assert mx.shrink_path(matrix, 'smoke') == mx.ROOT / 'configs/smoke/shrink.py'
    assert mx.shrink_path(matrix, 'full') is None


@pytest.mark.parametrize('scale', list(mx.load()['scales']))
def test_every_run_resolves_with_option_keys_that_exist_in_its_config(matrix, scale):
    """Resolution refuses an option key the config lacks (runconfig.merge_checked)."""
    from pipeline import runconfig

    for name, spec in mx.runs_at(matrix, scale).items():
        cfg = runconfig.resolve(matrix, scale, name, 0)
        for key, value in spec['options'].items():
            node = cfg
            for part in key.split('.'):
                node = node[part]
            assert node == value, (name, scale, key)


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
    (lambda d: d['finetune']['ce_r50_v1'].update(tables=['table9/x']),
     "ce_r50_v1: tables: unknown table 'table9'; paper.yaml has: table1, table2"),
    (lambda d: d['finetune']['ce_r50_v1'].update(tables=['table1']), 'finetune/ce_r50_v1/tables/0'),
    (lambda d: d['scales']['proxy'].update(tables=['table1', 'Table2']),
     "scales/proxy/tables: unknown table 'Table2'"),
    (lambda d: d['figure4']['a'].update(run='ghost'), "figure4/a: run 'ghost' is not in `analyse`"),
    (lambda d: d['analyse'].append('ghost'), "analyse: unknown run 'ghost'"),
    (lambda d: d['scales']['rehearsal'].update(rehearses='fulll'),
     "scales/rehearsal/rehearses: unknown scale 'fulll'"),
    (lambda d: d['scales']['rehearsal'].update(data='synthesize'),
     'scales/rehearsal: a `mirror` is fetched from (data: fetch)'),
    (lambda d: d['scales']['rehearsal']['length'].pop('warmup_images'),
     "scales/rehearsal/length: 'warmup_images' is a required property"),
])
def test_bad_matrix_fails_naming_the_file_and_the_place(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(SystemExit) as err:
        mx.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_table_names_are_paper_yamls(tmp_path, monkeypatch):
    """Every table name is checked against pipeline/paper.yaml, the one list of the paper's
    tables: a table added there is known to the matrix, the schema and the aggregate alike."""
    paper = yaml.safe_load(mx.PAPER_FILE.read_text())
    assert mx.table_names() == ('table1', 'table2', 'table3', 'table4', 'table5')
    paper['tables']['table6'] = paper['tables']['table4']
    (tmp_path / 'paper.yaml').write_text(yaml.safe_dump(paper))
    monkeypatch.setattr(mx, 'PAPER_FILE', tmp_path / 'paper.yaml')
    path = _write(tmp_path, lambda d: d['scales']['proxy'].update(tables=['table1', 'table6']))
    assert mx.load(path)['scales']['proxy']['tables'] == ['table1', 'table6']
    mx.check_tables(['table6'], 'here')
    with pytest.raises(SystemExit, match="here: unknown table 'table7'"):
        mx.check_tables(['table7'], 'here')


def test_unknown_run_lists_the_known_ones(matrix):
    with pytest.raises(SystemExit, match='unknown run .ghost.*loce_r50_v1'):
        mx.run_spec(matrix, 'ghost')
