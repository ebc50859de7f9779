"""pipeline/paper.yaml: the paper's Tables 1-5 as transcribed, checked against the paper's text."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / 'pipeline' / 'paper.yaml').read_text())
MATRIX = yaml.safe_load((ROOT / 'pipeline' / 'experiments.yaml').read_text())
METRICS = ['APb', 'AP', 'APr', 'APc', 'APf']
ROWS = {
    'table1': ['baseline', 'ebl', 'mfs', 'loce', 'prior'],
    'table2': ['alpha-0.8', 'alpha-0.9', 'alpha-0.95'],
    'table3': ['bg-0.1', 'bg-0.01', 'bg-0.001'],
    'table4': ['k2-m2', 'k4-m4', 'k4-m8', 'k8-m4', 'k8-m8'],
    'table5': ['r50_v05/rfs', 'r50_v05/eql', 'r50_v05/forest_rcnn', 'r50_v05/bags',
               'r50_v05/balms', 'r50_v05/eqlv2', 'r50_v05',
               'r50_v1/rfs', 'r50_v1/eql', 'r50_v1/seesaw', 'r50_v1/eqlv2', 'r50_v1',
               'r101_v1/rfs', 'r101_v1/eql', 'r101_v1/bags', 'r101_v1/seesaw', 'r101_v1/eqlv2',
               'r101_v1'],
}


# The paper's rows only; rows marked `beyond_paper` are runs this suite adds.
def paper_rows(table: str) -> dict:
    return {k: v for k, v in PAPER['tables'][table]['rows'].items() if not v.get('beyond_paper')}


# Every table cell a matrix run fills.
CELLS = [c for section in ('pretrain', 'finetune') for spec in MATRIX[section].values()
         for c in spec.get('tables', [])]


def row(cell: str) -> dict:
    table, _, key = cell.partition('/')
    return PAPER['tables'][table]['rows'][key]


def test_every_table_and_row_in_paper_order():
    assert list(PAPER['tables']) == list(ROWS)
    for table, keys in ROWS.items():
        assert list(paper_rows(table)) == keys, table


def test_columns_map_box_ap_and_mask_ap():
    assert list(PAPER['columns']) == METRICS
    assert (PAPER['columns']['APb']['task'], PAPER['columns']['APb']['metric']) == ('bbox', 'AP')
    for column in METRICS[1:]:
        assert PAPER['columns'][column]['task'] == 'segm'
    assert [PAPER['columns'][c]['metric'] for c in METRICS[1:]] == ['AP', 'APr', 'APc', 'APf']


def test_every_cell_is_a_number_with_one_decimal_in_range():
    for table, spec in PAPER['tables'].items():
        assert spec['caption'] and spec['caption_tex'] and spec['setting'], table
        for key, values in spec['rows'].items():
            assert values['label'], (table, key)
            block = spec.get('blocks', {}).get(values.get('block'), {})
            for param in spec['params']:
                assert values.get(param['key'], block.get(param['key'])) is not None, (table, key)
            if values.get('beyond_paper'):
                assert not set(METRICS) & set(values), (table, key)  # no paper number to show
                continue
            for metric in METRICS:
                value = values[metric]
                assert isinstance(value, float) and 0 < value < 100, (table, key, metric)
                assert round(value, 1) == value, (table, key, metric)


@pytest.mark.parametrize('cell, expected', [
    ('table1/baseline', [20.4, 20.2, 2.9, 18.2, 30.1]),
    ('table1/prior', [23.4, 23.1, 20.8, 23.1, 24.1]),
    ('table2/alpha-0.8', [27.2, 26.4, 17.2, 26.3, 30.7]),
    ('table3/bg-0.1', [26.7, 26.0, 17.8, 25.5, 30.3]),
    ('table4/k8-m8', [27.2, 26.5, 17.5, 26.3, 30.7]),
    ('table5/r50_v05/forest_rcnn', [25.9, 25.6, 18.3, 26.4, 27.6]),
    ('table5/r50_v05/eql', [24.1, 25.2, 14.6, 24.4, 26.8]),
    ('table5/r50_v1/seesaw', [24.3, 23.3, 13.0, 22.9, 28.2]),
    ('table5/r101_v1', [29.0, 28.0, 19.5, 27.8, 32.0]),
])
def test_spot_checks_against_the_paper_tables(cell, expected):
    assert [row(cell)[m] for m in METRICS] == expected


def test_the_default_loce_row_is_the_same_in_tables_1_to_5():
    """alpha 0.9, s_hat 0.01, k=8/m=4 are the defaults, so these rows are one model."""
    same = ['table1/loce', 'table2/alpha-0.9', 'table3/bg-0.01', 'table4/k8-m4', 'table5/r50_v1']
    for cell in same:
        assert [row(cell)[m] for m in METRICS] == [27.4, 26.6, 18.5, 26.2, 30.7], cell


def test_differences_quoted_in_the_text_follow_from_the_tables():
    def diff(a, b, metric):
        return round(row(a)[metric] - row(b)[metric], 1)
    # 4.2: EBL +3.6 AP^b and AP; +5.4 / +5.5 / +0.6 on rare / common / frequent.
    assert [diff('table1/ebl', 'table1/baseline', m) for m in METRICS] == [3.6, 3.6, 5.4, 5.5, 0.6]
    # 4.2: MFS +5.6 AP^b, +15.5 AP_r, +6.8 AP_c (its "5.3" mask AP is 5.5 in Table 1).
    mfs = [diff('table1/mfs', 'table1/baseline', m) for m in ('APb', 'APr', 'APc')]
    assert mfs == [5.6, 15.5, 6.8]
    assert diff('table1/mfs', 'table1/baseline', 'AP') == 5.5
    # 4.2: LOCE +7.0 AP^b and +6.4 AP over the baseline.
    assert [diff('table1/loce', 'table1/baseline', m) for m in ('APb', 'AP')] == [7.0, 6.4]
    # 4.3: on v0.5 LOCE beats BAGS by 2.4 / 2.1 (and 4.0 on rare), BALMS by 0.6 / 1.4.
    bags = [diff('table5/r50_v05', 'table5/r50_v05/bags', m) for m in ('APb', 'AP', 'APr')]
    assert bags == [2.4, 2.1, 4.0]
    assert [diff('table5/r50_v05', 'table5/r50_v05/balms', m) for m in ('APb', 'AP')] == [0.6, 1.4]
    # Abstract: tail classes +15.6 AP (LOCE vs baseline, rare).
    assert diff('table1/loce', 'table1/baseline', 'APr') == 15.6


def test_table1_check_marks_and_indicator():
    rows = PAPER['tables']['table1']['rows']
    assert [(rows[k]['ebl'], rows[k]['mfs']) for k in ROWS['table1']] == [
        (False, False), (True, False), (False, True), (True, True), (True, True)]
    assert rows['prior']['indicator'] == 'P(y)'
    assert {rows[k]['indicator'] for k in ROWS['table1'][:4]} == {'s'}


def test_table5_blocks_notes_and_citations():
    spec = PAPER['tables']['table5']
    assert list(spec['blocks']) == ['r50_v05', 'r50_v1', 'r101_v1']
    assert spec['blocks']['r101_v1']['backbone'] == 'R-101-FPN'
    assert spec['blocks']['r50_v05']['dataset'] == 'LVIS v0.5'
    for key, values in spec['rows'].items():
        assert values['block'] == key.partition('/')[0]
        assert set(values['notes']) <= {'*', '†'}
        assert ('ref' in values) == ('/' in key and not values.get('beyond_paper')), key
    assert spec['rows']['r50_v1/seesaw']['notes'] == ['*', '†']
    assert spec['rows']['r101_v1/seesaw']['notes'] == ['†']
    assert all(spec['rows'][f'{b}/eqlv2']['notes'] == ['†'] for b in spec['blocks'])
    assert {v['ref'] for v in spec['rows'].values() if 'ref' in v} == {7, 13, 19, 21, 22, 24, 27}


def test_every_table_cell_of_the_matrix_exists_in_the_paper():
    assert CELLS, 'the matrix names no table cell'
    for cell in CELLS:
        table, _, key = cell.partition('/')
        assert key in PAPER['tables'][table]['rows'], cell


def test_every_row_but_forest_rcnn_has_a_run():
    missing = {f'{t}/{k}' for t in PAPER['tables'] for k in PAPER['tables'][t]['rows']} - set(CELLS)
    assert missing == {'table5/r50_v05/forest_rcnn'}  # a citation: its code is MMDetection 1.x
