"""pipeline/aggregate on fake results for the whole smoke matrix: numbers, layout, files."""
import copy
import csv
import json
import re
import statistics
from pathlib import Path

import pytest
import yaml

from pipeline import aggregate as ag
from pipeline.aggregate import figure4 as ag_figure4
from pipeline import matrix as mx

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / 'pipeline' / 'paper.yaml').read_text())
METRICS = list(PAPER['columns'])
TABLES = list(PAPER['tables'])
MISSING_RUN = 'loce_k8m8_r50_v1'        # no result at all
PARTIAL_RUN = 'mfs_r50_v1'              # seed 0 only
UNDEFINED = ('ebl_r50_v1', 1, 'APr')    # segm APr undefined (None) in this seed
RUNS = sorted(mx.runs(mx.load()))
FIG_CLASSES = [  # (id, name, frequency, train_instances); ties on train_instances break by id
    (3, 'person', 'f', 500), (1, 'car', 'f', 300), (7, 'dog', 'f', 300), (2, 'cup', 'c', 120),
    (9, 'kite', 'f', 110), (4, 'lamp', 'c', 60), (8, 'yak', 'r', 9), (5, 'oboe', 'c', 8),
    (6, 'gong', 'r', 3), (10, 'ewer', 'r', 1)]


def smoke_matrix(compares_with_paper: bool = False) -> dict:
    """The matrix with two smoke seeds; `compares_with_paper` makes smoke print Δ like `full`,
    so that the Δ arithmetic is checked on the smoke fakes."""
    matrix = copy.deepcopy(mx.load())
    matrix['scales']['smoke']['seeds'] = [0, 1]
    matrix['scales']['smoke']['compares_with_paper'] = compares_with_paper
    return matrix


def metric_value(run: str, seed: int, column: str) -> float | None:
    """A distinct, reproducible AP per run, seed and metric."""
    if (run, seed, column) == UNDEFINED:
        return None
    index = RUNS.index(run)
    return round(5 + 0.75 * index + 1.3 * seed + 0.11 * METRICS.index(column) * (seed + 1), 2)


def metrics_json(run: str, seed: int) -> dict:
    keys = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
    tasks = {'bbox': dict.fromkeys(keys, 1.0), 'segm': dict.fromkeys(keys, 1.0)}
    for column, spec in PAPER['columns'].items():
        tasks[spec['task']][spec['metric']] = metric_value(run, seed, column)
    return dict(run=run, seed=seed, scale='smoke', dataset='lvis_v1', **tasks,
                provenance=dict(git_commit='abc123', git_dirty=False,
                                packages={'torch': '2.13.0', 'mmdet': '3.3.0'},
                                config=f'configs/{run}.py', config_sha256='0' * 64,
                                seed=seed, device='cpu (2 threads)', train_wall_s=10.0 + seed,
                                eval_wall_s=2.5,
                                checkpoint=f'work/smoke/{run}/seed{seed}/final.pth',
                                created=f'2026-01-0{seed + 1}T00:00:00+00:00'))


def class_stats(run: str, seed: int) -> list[dict]:
    out = []
    for rank, (cid, name, freq, n_train) in enumerate(FIG_CLASSES):
        no_val = cid == 10
        score = round(0.9 - 0.08 * rank + 0.01 * seed + 0.001 * len(run), 4)
        out.append(dict(id=cid, name=name, frequency=freq, train_instances=n_train,
                        val_instances=0 if no_val else 4, mean_score=None if no_val else score,
                        accuracy=None if no_val else round(score / 2, 4),
                        accuracy_fg=None if no_val else round(score / 1.5, 4)))
    return out[::-1]  # the reader must sort, not trust the file order


def write(results: Path, kind: str, run: str, seed: int, obj, scale: str = 'smoke') -> Path:
    where = mx.metrics_path if kind == 'metrics' else mx.analysis_path
    path = results / scale / where(scale, run, seed).relative_to(mx.results_dir(scale))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def fake_results(results: Path, matrix: dict, scale: str = 'smoke') -> dict:
    """Metrics for every table run (seeds 0, 1) except MISSING_RUN and PARTIAL_RUN's seed 1;
    the evaluated pretrain r50_v1 too; analyses for the analysed runs, panel b's with seed 0
    only."""
    written = {}
    for run, spec in mx.runs(matrix).items():
        if spec['tables'] and run != MISSING_RUN:
            written[run] = [0] if run == PARTIAL_RUN else [0, 1]
            for seed in written[run]:
                write(results, 'metrics', run, seed, metrics_json(run, seed), scale)
    write(results, 'metrics', 'r50_v1', 0, metrics_json('r50_v1', 0), scale)
    for run in matrix['analyse']:
        for seed in ([0] if run == matrix['figure4']['b']['run'] else [0, 1]):
            write(results, 'analysis', run, seed,
                  dict(run=run, seed=seed, scale=scale, classes=class_stats(run, seed),
                       provenance=dict(config_sha256='0' * 64)), scale)
    return written


@pytest.fixture(scope='module')
def done(tmp_path_factory):
    results = tmp_path_factory.mktemp('results')
    matrix = smoke_matrix(compares_with_paper=True)
    written = fake_results(results, matrix)
    summary = ag.aggregate('smoke', results_dir=results / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    return dict(results=results, out=results / 'smoke', matrix=matrix, written=written,
                summary=summary)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline='') as f:
        return list(csv.DictReader(f))


def cell_runs(matrix: dict) -> dict[str, str]:
    return {cell: run for run, spec in mx.runs(matrix).items() for cell in spec['tables']}


def test_csv_mean_std_n_delta_equal_hand_computation(done):
    cells = cell_runs(done['matrix'])
    checked = 0
    for table in TABLES:
        for rec in read_csv(done['out'] / 'tables' / f'{table}.csv'):
            paper = PAPER['tables'][table]['rows'][rec['row']].get(rec['metric'])
            assert rec['paper'] == ('' if paper is None else repr(round(paper, 6)))
            run = cells.get(f'{table}/{rec["row"]}')
            assert rec['run'] == (run or '')
            seeds = done['written'].get(run, [])
            values = [metric_value(run, s, rec['metric']) for s in seeds]
            values = [v for v in values if v is not None]
            assert int(rec['n']) == len(values)
            if not values:
                assert rec['mean'] == rec['std'] == rec['delta'] == ''
                continue
            assert float(rec['mean']) == pytest.approx(statistics.mean(values), abs=1e-6)
            if paper is None:  # a row beyond the paper: nothing to take a difference with
                assert rec['delta'] == ''
            else:
                assert float(rec['delta']) == pytest.approx(statistics.mean(values) - paper, abs=1e-6)
            if len(values) > 1:
                assert float(rec['std']) == pytest.approx(statistics.stdev(values), abs=1e-6)
            else:
                assert rec['std'] == ''
            checked += 1
    assert checked >= 5 * 16  # every reproduced cell but the missing run's


def test_csv_status_and_one_row_per_table_row_and_metric(done):
    rows = read_csv(done['out'] / 'tables' / 'table5.csv')
    assert len(rows) == len(PAPER['tables']['table5']['rows']) * len(METRICS)
    status = {r['row']: r['status'] for r in rows}
    assert status['r50_v05/forest_rcnn'] == 'paper-only'  # the one citation left
    assert status['r50_v05/bags'] == status['r101_v1/seesaw'] == status['r50_v1'] == 'ok'
    assert status['r50_v1/ecm'] == 'ok'  # a row beyond the paper
    t1 = {r['row']: r for r in read_csv(done['out'] / 'tables' / 'table1.csv')}
    assert t1['mfs']['status'] == 'partial' and t1['mfs']['n_expected'] == '2'
    assert {r['status'] for r in read_csv(done['out'] / 'tables' / 'table4.csv')
            if r['row'] == 'k8-m8'} == {'missing'}


def md_lines(done, table: str, source: str) -> list[list[str]]:
    """Cells of the Markdown table's lines whose source column starts with `source`."""
    n_params = len(PAPER['tables'][table]['params'])
    text = (done['out'] / 'tables' / f'{table}.md').read_text()
    rows = [[c.strip() for c in line.strip().strip('|').split('|')]
            for line in text.splitlines() if line.startswith('| ')]
    return [r for r in rows[1:] if r[n_params].startswith(source)]


def test_every_paper_number_is_on_its_rows_paper_line(done):
    for table in TABLES:
        spec = PAPER['tables'][table]
        lines = md_lines(done, table, 'paper')
        assert len(lines) == len(spec['rows'])
        for cells, row in zip(lines, spec['rows'].values()):
            assert cells[-5:] == ['—' if row.get('beyond_paper') else f'{row[m]:.1f}'
                                  for m in METRICS]


def test_md_reproduced_and_delta_lines(done):
    loce = PAPER['tables']['table1']['rows']['loce']
    [repro] = [r for r in md_lines(done, 'table1', 'reproduced') if 'loce_r50_v1' in r[3]]
    assert repro[3] == 'reproduced `loce_r50_v1` (n=2)'
    values = [[metric_value('loce_r50_v1', s, m) for s in (0, 1)] for m in METRICS]
    assert repro[-5:] == [f'{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}' for v in values]
    deltas = md_lines(done, 'table1', 'Δ')
    assert f'{statistics.mean(values[2]) - loce["APr"]:+.2f}' in deltas[3]
    [partial] = [r for r in md_lines(done, 'table1', 'reproduced') if PARTIAL_RUN in r[3]]
    assert partial[3].endswith('(n=1/2)')
    [ebl] = [r for r in md_lines(done, 'table1', 'reproduced') if 'ebl_r50_v1' in r[3]]
    assert ebl[3 + 1 + METRICS.index('APr')].endswith('(n=1)')  # APr undefined in seed 1


def test_missing_and_paper_only_rows_in_md(done):
    [k8m8] = [r for r in md_lines(done, 'table4', 'reproduced') if MISSING_RUN in r[2]]
    assert k8m8[-5:] == ['missing'] * 5
    t5 = md_lines(done, 'table5', 'reproduced')
    assert sum(r[-5:] == ['—'] * 5 for r in t5) == 1  # Forest R-CNN, cited only
    paper_lines = md_lines(done, 'table5', 'paper')
    methods = [r[0] for r in paper_lines]
    assert 'Seesaw Loss [24] *†' in methods and methods.count('LOCE (ours)') == 3
    [ecm] = [r for r in paper_lines if r[0] == 'ECM Loss (ECCV 2022)']
    assert ecm[-5:] == ['—'] * 5  # beyond the paper: no paper numbers


def test_every_output_file_exists_and_no_temp_file_is_left(done):
    out = done['out']
    expected = {f'tables/{t}.{ext}' for t in TABLES for ext in ('md', 'csv', 'tex')}
    expected |= {f'figures/{f}.{ext}' for f in ('figure4', 'indicator_trajectory')
                 for ext in ('png', 'svg', 'csv')} | {'REPORT.md'}
    expected |= {f'figures/figure4_{p}.csv' for p in 'abc'}
    expected |= {'tables/per_class_ap.csv', 'figures/ap_by_frequency.png',
                 'figures/ap_by_frequency.csv', 'figures/loss_curves.png'}
    expected |= {f'ap/{run}.json' for run in mx.runs_at(done['matrix'], 'smoke')}
    made = {str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()
            and p.parts[len(out.parts)] in ('tables', 'figures', 'ap', 'REPORT.md')}
    assert made == expected
    assert {str(p.relative_to(out)) for p in done['summary']['written']} == expected
    leftovers = [p for p in out.rglob('*') if p.name.startswith('.') or p.name.endswith('.tmp')]
    assert leftovers == []


def test_tex_is_booktabs_with_one_cell_per_column(done):
    for table in TABLES:
        text = (done['out'] / 'tables' / f'{table}.tex').read_text()
        for rule in (r'\toprule', r'\midrule', r'\bottomrule', r'\caption{', r'\end{table}'):
            assert rule in text
        width = len(PAPER['tables'][table]['params']) + 1 + len(METRICS)
        body = [line for line in text.splitlines() if line.endswith(r'\\')]
        assert all(line.count(' & ') == width - 1 for line in body), table
        assert '±' not in text and 'Δ' not in text and '—' not in text
    t5 = (done['out'] / 'tables' / 'table5.tex').read_text()
    assert t5.count(r'\midrule') == 3  # after the header and between the three blocks
    assert r'Seesaw Loss [24]$^{*\dagger}$' in t5


def test_png_is_an_image_and_svg_has_the_three_panel_titles(done):
    from PIL import Image
    with Image.open(done['out'] / 'figures' / 'figure4.png') as img:
        assert img.format == 'PNG' and img.size[0] > 500 and img.size[1] > 500
    svg = (done['out'] / 'figures' / 'figure4.svg').read_text()
    for panel, spec in done['matrix']['figure4'].items():
        assert f'({panel}) {spec["title"]}' in svg.replace('&amp;', '&')
    fig = ag_figure4.figure4(done['summary']['figure4'])
    assert len(fig.axes) == 3
    assert [ax.get_title().split(' [')[0] for ax in fig.axes] == [
        f'({p}) {s["title"]}' for p, s in done['matrix']['figure4'].items()]
    [bars] = fig.axes[0].containers
    run = done['matrix']['figure4']['a']['run']
    scored = [c['mean_score'] for c in class_stats(run, 0) if c['mean_score'] is not None]
    heights = [b.get_height() for b in bars]
    assert len(heights) == len(FIG_CLASSES)
    assert sorted(h for h in heights if h == h) == pytest.approx(sorted(s + 0.005 for s in scored))


def test_figure4_csv_is_seed_mean_in_training_order(done):
    rows = read_csv(done['out'] / 'figures' / 'figure4.csv')
    assert list(rows[0]) == list(ag_figure4.FIGURE4_FIELDS)
    order = [cid for cid, *_ in FIG_CLASSES]
    for panel, spec in done['matrix']['figure4'].items():
        mine = [r for r in rows if r['panel'] == panel]
        assert [int(r['category_id']) for r in mine] == order
        assert [int(r['class_index']) for r in mine] == list(range(len(order)))
        seeds = [0] if panel == 'b' else [0, 1]
        for r in mine:
            cid = int(r['category_id'])
            stats = [next(c for c in class_stats(spec['run'], s) if c['id'] == cid) for s in seeds]
            assert r['run'] == spec['run'] and int(r['n_seeds']) == len(seeds)
            if stats[0]['mean_score'] is None:
                assert r['mean_score'] == r['accuracy'] == r['accuracy_fg'] == ''
            else:
                for field in ('mean_score', 'accuracy', 'accuracy_fg'):
                    assert float(r[field]) == pytest.approx(statistics.mean(c[field] for c in stats))


def test_report_lists_runs_times_environment_and_missing(done):
    report = (done['out'] / 'REPORT.md').read_text()
    for table in TABLES:
        assert f'(tables/{table}.md)' in report
    assert '(figures/figure4.png)' in report
    files = sum(len(s) for s in done['written'].values()) + 1  # + the evaluated pretrain
    train = sum(10.0 + s for seeds in done['written'].values() for s in seeds) + 10.0
    assert f'Totals over {files} metrics files: training {train:.0f} s' in report
    assert f'evaluation {2.5 * files:.0f} s' in report
    assert '`abc123`' in report and 'cpu (2 threads)' in report and '| mmdet | 3.3.0 |' in report
    missing = re.findall(r'^- `(\S+)` \(run `(\S+)`, seed (\d)', report, flags=re.M)
    assert sorted(missing) == sorted([
        (f'metrics/{MISSING_RUN}/seed0.json', MISSING_RUN, '0'),
        (f'metrics/{MISSING_RUN}/seed1.json', MISSING_RUN, '1'),
        (f'metrics/{PARTIAL_RUN}/seed1.json', PARTIAL_RUN, '1'),
        (f'analysis/{done["matrix"]["figure4"]["b"]["run"]}/seed1.json',
         done['matrix']['figure4']['b']['run'], '1')])
    assert {(m['run'], m['seed']) for m in done['summary']['missing']} == {
        (r, int(s)) for _, r, s in missing}


def test_report_reading_is_computed_from_the_tables(done):
    report = (done['out'] / 'REPORT.md').read_text()
    base, loce = cell_runs(done['matrix'])['table1/baseline'], 'loce_r50_v1'
    rows = PAPER['tables']['table1']['rows']
    diff = (statistics.mean(metric_value(loce, s, 'APr') for s in (0, 1))
            - statistics.mean(metric_value(base, s, 'APr') for s in (0, 1)))
    paper = rows['loce']['APr'] - rows['baseline']['APr']
    [line] = [l for l in report.splitlines() if l.startswith(f'| {rows["loce"]["label"]} |')]
    assert line.split(' | ')[1 + METRICS.index('APr')] == f'{diff:+.2f} ({paper:+.1f})'
    # Ties are listed: Table 2's paper AP is 26.6 for alpha 0.9 and 0.95.
    cells = cell_runs(done['matrix'])
    ap = {row: statistics.mean(metric_value(cells[f'table2/{row}'], s, 'AP') for s in (0, 1))
          for row in PAPER['tables']['table2']['rows']}
    best = max(ap, key=ap.get)
    assert f'- table2: reproduced `{best}` (AP {ap[best]:.2f}); ' in report
    assert 'paper `alpha-0.9`, `alpha-0.95` (AP 26.6)' in report
    def compared(cell):  # a cell with paper numbers to take Δ with
        table, _, row = cell.partition('/')
        return not PAPER['tables'][table]['rows'][row].get('beyond_paper')
    n_runs = sum(any(map(compared, s['tables'])) for s in mx.runs(done['matrix']).values()) - 1  # MISSING_RUN
    assert f'- pairs: {n_runs * len(METRICS)}; ' in report


def test_report_names_each_runs_config_and_overrides(done):
    report = (done['out'] / 'REPORT.md').read_text()
    [line] = [l for l in report.splitlines() if l.startswith('| `loce_alpha0.8_r50_v1` |')]
    assert '`configs/loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py`' in line
    assert '`model.roi_head.indicator.alpha=0.8`' in line
    assert 'results name `configs/loce_alpha0.8_r50_v1.py`' in line  # the fake's name
    assert 'Every config runs shrunk by `configs/smoke/shrink.py` at this scale.' in report


def test_rerun_gives_identical_text_outputs(done, tmp_path):
    first = {p: p.read_bytes() for p in done['out'].rglob('*')
             if p.is_file() and p.suffix in ('.md', '.csv', '.tex', '.svg')}
    ag.aggregate('smoke', results_dir=done['results'] / 'smoke', check_configs=False, matrix=done['matrix'], paper=PAPER)
    assert {p: p.read_bytes() for p in first} == first


def test_no_results_at_all_still_writes_everything(tmp_path):
    matrix = smoke_matrix()
    summary = ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    assert (tmp_path / 'smoke' / 'REPORT.md').is_file()
    out = tmp_path / 'smoke'
    statuses = {r['status'] for t in TABLES for r in read_csv(out / 'tables' / f'{t}.csv')}
    assert statuses == {'missing', 'paper-only'}
    n_table_runs = sum(bool(s['tables']) for s in mx.runs(matrix).values())
    assert len(summary['missing']) == 2 * (n_table_runs + len(matrix['analyse']))
    assert 'missing: no analysis results' in (out / 'figures' / 'figure4.svg').read_text()


def test_malformed_json_fails_naming_the_file(tmp_path):
    matrix = smoke_matrix()
    bad = write(tmp_path, 'metrics', 'loce_r50_v1', 0, '{"run": "loce_r50_v1", ')
    with pytest.raises(ValueError, match=re.escape(str(bad)) + '.*malformed JSON'):
        ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    assert not (tmp_path / 'smoke' / 'REPORT.md').exists()


def test_result_of_another_run_or_bad_value_fails_naming_the_file(tmp_path):
    matrix = smoke_matrix()
    path = write(tmp_path, 'metrics', 'loce_r50_v1', 0, metrics_json('ebl_r50_v1', 0))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*run 'ebl_r50_v1'"):
        ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    bad = metrics_json('loce_r50_v1', 0)
    bad['segm']['APr'] = 'high'
    write(tmp_path, 'metrics', 'loce_r50_v1', 0, bad)
    with pytest.raises(ValueError, match=re.escape(str(path)) + '.*segm.APr'):
        ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)


def test_a_matrix_cell_missing_from_the_paper_fails(tmp_path):
    matrix = smoke_matrix()
    matrix['finetune']['loce_r50_v1']['tables'].append('table2/alpha-0.5')
    with pytest.raises(ValueError, match='table2/alpha-0.5'):
        ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)


def test_result_files_outside_the_matrix_or_scale_are_listed_not_read(tmp_path):
    matrix = smoke_matrix()
    stale = write(tmp_path, 'metrics', 'loce_r50_v1', 7, '{not json: never read}')
    summary = ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    assert summary['ignored'] == [stale]
    report = (tmp_path / 'smoke' / 'REPORT.md').read_text()
    assert f'- `{stale.relative_to(tmp_path / "smoke")}`' in report


def test_a_truncated_result_stops_aggregate_and_leaves_the_old_outputs(tmp_path):
    matrix = smoke_matrix()
    fake_results(tmp_path, matrix)
    ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    outputs = {p: p.read_bytes() for name in ag.outputs('smoke', matrix)
               for p in [tmp_path / 'smoke' / name]}
    path = write(tmp_path, 'analysis', 'loce_r50_v1', 0, '{"run": "loce_r50_v1", "seed": 0, "cla')
    with pytest.raises(ValueError, match=re.escape(str(path)) + '.*malformed JSON.*re-run'):
        ag.aggregate('smoke', results_dir=tmp_path / 'smoke', check_configs=False, matrix=matrix, paper=PAPER)
    assert {p: p.read_bytes() for p in outputs} == outputs


def test_a_result_made_under_another_config_is_stale_not_a_number(tmp_path):
    matrix = smoke_matrix()
    write(tmp_path, 'metrics', 'loce_r50_v1', 0, metrics_json('loce_r50_v1', 0))  # config '0' * 64
    results = ag.collect('smoke', tmp_path / 'smoke', matrix, PAPER,
                         current=lambda run, seed: dict(config_sha256='1' * 64))
    assert results['metrics']['loce_r50_v1'] == {}
    [entry] = [m for m in results['missing']
               if (m['kind'], m['run'], m['seed']) == ('metrics', 'loce_r50_v1', 0)]
    assert entry['stale'] == 'stale: made under config 000000000000, now 111111111111'
    same = ag.collect('smoke', tmp_path / 'smoke', matrix, PAPER,
                      current=lambda run, seed: dict(config_sha256='0' * 64))
    assert set(same['metrics']['loce_r50_v1']) == {0}
    made = metrics_json('loce_r50_v1', 0)
    made['provenance']['identity'] = dict(config_sha256='0' * 64, code_sha256='a' * 64)
    write(tmp_path, 'metrics', 'loce_r50_v1', 0, made)
    code = ag.collect('smoke', tmp_path / 'smoke', matrix, PAPER,
                      current=lambda run, seed: dict(config_sha256='0' * 64, code_sha256='b' * 64))
    assert code['metrics']['loce_r50_v1'] == {}
    assert any(m['stale'] == 'stale: made under training code aaaaaaaaaaaa, now bbbbbbbbbbbb'
               for m in code['missing'])


def test_outputs_list_is_what_aggregate_writes(done):
    written = sorted(str(p.relative_to(done['out'])) for p in done['summary']['written'])
    assert written == sorted(ag.outputs('smoke', done['matrix']))


def _full_config(run: str, matrix: dict):
    from mmengine.config import Config
    return Config.fromfile(ROOT / 'configs' / f'{mx.runs(matrix)[run]["config"]}.py')


def test_table5_footnotes_say_what_each_row_trains_and_are_true_of_its_run(done):
    """a: LOCE's normed mask predictor; b: fine-tuned from LOCE's stage 1; c: balanced softmax
    without the meta re-weighter. Each mark is where its claim holds of the row's run (its config
    and its place in the matrix), on the row's paper line, and its text is in md, csv and tex."""
    spec, matrix = PAPER['tables']['table5'], done['matrix']
    runs, cells = mx.runs(matrix), cell_runs(matrix)
    assert set(spec['footnotes']) == {'a', 'b', 'c'}
    marked = {}
    for key, row in spec['rows'].items():
        run = cells.get(f'table5/{key}')
        if '/' not in key or row.get('beyond_paper') or run is None:  # LOCE, added, cited
            assert 'trains' not in row, key
            continue
        head = _full_config(run, matrix).model.roi_head
        stage1 = runs[cells[f'table5/{row["block"]}']]['pretrain']  # LOCE's, of this block
        claims = {'a': head.mask_head.get('predictor_cfg', {}).get('type') == 'NormedConv2d',
                  'b': runs[run]['stage'] == 'finetune' and runs[run]['pretrain'] == stage1,
                  'c': head.bbox_head.loss_cls.type == 'BalancedSoftmaxLoss'}
        assert row.get('trains', []) == [m for m, holds in claims.items() if holds], key
        marked[key] = row.get('trains', [])
    assert {k for k, m in marked.items() if 'b' in m} == {'r50_v05/bags', 'r101_v1/bags',
                                                          'r50_v05/balms'}
    assert [k for k, m in marked.items() if 'c' in m] == ['r50_v05/balms']
    assert not marked['r50_v1/seesaw'] and not marked['r101_v1/seesaw']  # their own Conv mask

    md = (done['out'] / 'tables' / 'table5.md').read_text()
    paper_lines = md_lines(done, 'table5', 'paper')
    for (key, row), cells_ in zip(spec['rows'].items(), paper_lines):
        marks = ','.join(row.get('trains', []))
        assert cells_[0].endswith(f' <sup>{marks}</sup>') == bool(marks), key
    for mark, text in spec['footnotes'].items():
        assert f'\n<sup>{mark}</sup> {text}\n' in md
    assert "not BALMS's 27.0" in spec['footnotes']['c'] and 'normed mask' in spec['footnotes']['a']
    csv_rows = read_csv(done['out'] / 'tables' / 'table5.csv')
    for rec in csv_rows:
        row = spec['rows'][rec['row']]
        assert rec['trains'] == ' '.join(f'({m}) {spec["footnotes"][m]}'
                                         for m in row.get('trains', [])), rec['row']
    tex = (done['out'] / 'tables' / 'table5.tex').read_text()
    assert r'BAGS [13]\textsuperscript{a,b} & Mask R-CNN & R-50-FPN & LVIS v0.5' in tex
    assert r'EQL v2 [21]$^{\dagger}$\textsuperscript{a} & Mask R-CNN & R-101-FPN' in tex
    assert r"\textsuperscript{c}Balanced softmax without BALMS's meta re-weighter" in tex


def test_ap_files_hold_the_tables_ap_columns_and_nothing_else(done):
    """`dvc metrics show` reads ap/: one row per run, the five AP columns, no provenance."""
    for run in mx.runs_at(done['matrix'], 'smoke'):
        ap = json.loads((done['out'] / 'ap' / f'{run}.json').read_text())
        assert list(ap) == ['box AP', 'mask AP', 'mask APr', 'mask APc', 'mask APf'], run
        seeds = done['written'].get(run, [0] if run == 'r50_v1' else [])
        for column, key in zip(METRICS, ap):
            values = [v for s in seeds if (v := metric_value(run, s, column)) is not None]
            assert ap[key] == (pytest.approx(statistics.mean(values)) if values else None)
    assert set(json.loads((done['out'] / 'ap' / f'{MISSING_RUN}.json').read_text()).values()) \
        == {None}


def test_figure4_has_one_csv_per_panel_for_dvc_plots(done):
    rows = read_csv(done['out'] / 'figures' / 'figure4.csv')
    for panel in done['matrix']['figure4']:
        mine = read_csv(done['out'] / 'figures' / f'figure4_{panel}.csv')
        assert mine == [r for r in rows if r['panel'] == panel] and mine


def _aggregated(tmp_path, scale: str, matrix: dict) -> Path:
    fake_results(tmp_path, matrix, scale)
    ag.aggregate(scale, results_dir=tmp_path / scale, check_configs=False, matrix=matrix,
                 paper=PAPER)
    return tmp_path / scale


def test_smoke_shows_the_paper_as_reference_without_delta(tmp_path):
    """smoke does not claim to approximate the paper: paper lines stay, no Δ line or column, no
    summary of differences to the paper in REPORT.md."""
    assert not mx.load()['scales']['smoke'].get('compares_with_paper')
    out = _aggregated(tmp_path, 'smoke', smoke_matrix())
    done = dict(out=out)
    for table in TABLES:
        assert md_lines(done, table, 'Δ') == [], table
        assert len(md_lines(done, table, 'paper')) == len(PAPER['tables'][table]['rows'])
        assert {r['delta'] for r in read_csv(out / 'tables' / f'{table}.csv')} == {''}
        assert r'$\Delta$ = reproduced' not in (out / 'tables' / f'{table}.tex').read_text()
    assert 'no Δ: scale `smoke` does not approximate the paper' in (
        out / 'tables' / 'table1.md').read_text()
    report = (out / 'REPORT.md').read_text()
    assert 'mean |Δ|' not in report and '- pairs:' not in report
    assert 'No Δ = reproduced − paper is summed up: scale `smoke`' in report


def test_full_shows_delta_to_the_paper(tmp_path):
    matrix = mx.load()
    assert matrix['scales']['full']['compares_with_paper'] is True
    out = _aggregated(tmp_path, 'full', matrix)
    done = dict(out=out)
    loce = PAPER['tables']['table1']['rows']['loce']
    deltas = md_lines(done, 'table1', 'Δ')
    mean_apr = statistics.mean(metric_value('loce_r50_v1', s, 'APr') for s in (0, 1))
    assert any(f'{mean_apr - loce["APr"]:+.2f}' in cells for cells in deltas)
    t1 = {r['row']: r for r in read_csv(out / 'tables' / 'table1.csv') if r['metric'] == 'APr'}
    assert float(t1['loce']['delta']) == pytest.approx(mean_apr - loce['APr'], abs=1e-6)
    report = (out / 'REPORT.md').read_text()
    assert 'mean |Δ|' in report and 'No Δ = reproduced − paper' not in report


def test_a_rehearsal_labels_every_table_and_lists_what_it_substitutes(tmp_path):
    """Issue #23: no rehearsal number may pass for a result: every table says REHEARSAL, its
    rows are 'rehearsal', and REPORT.md lists the substitutions from the matrix."""
    matrix = mx.load()
    spec = matrix['scales']['rehearsal']
    out = _aggregated(tmp_path, 'rehearsal', matrix)
    for table in TABLES:
        md = (out / 'tables' / f'{table}.md').read_text()
        rows = [line for line in md.splitlines() if line.startswith('|')]
        assert '**REHEARSAL of scale `full`' in md and not any('reproduced' in r for r in rows)
        assert 'REHEARSAL of scale full' in (out / 'tables' / f'{table}.tex').read_text()
    assert 'rehearsal `loce_r50_v1` (n=1)' in (out / 'tables' / 'table1.md').read_text()
    report = (out / 'REPORT.md').read_text()
    assert '## What this rehearsal substitutes for scale `full`' in report
    assert (f'iteration-based ones {spec["length"]["iterations"]} iteration(s), and MFS\'s '
            f'warm-up pass takes {spec["length"]["warmup_images"]} images per process') in report
    assert f'{spec["processes"]} training process(es) per run under torchrun' in report
    reading = report.split('## Reading (computed)')[1]
    assert 'each row minus the baseline row, rehearsal (paper)' in reading
    assert 'reproduced' not in reading.replace('Δ = reproduced − paper', '')
    smoke = _aggregated(tmp_path / 'smoke', 'smoke', smoke_matrix())
    assert 'REHEARSAL' not in (smoke / 'tables' / 'table1.md').read_text()
    assert 'each row minus the baseline row, reproduced (paper)' in (smoke / 'REPORT.md').read_text()


def test_a_table_not_run_at_a_scale_says_so_not_dash(tmp_path):
    """proxy runs Table 1 only: Tables 2-5 say "not run at this scale" ("not run" in a cell);
    "—" stays for the one row the suite does not reproduce at all (Forest R-CNN, cited)."""
    matrix = mx.load()
    assert matrix['scales']['proxy']['tables'] == ['table1']
    out = _aggregated(tmp_path, 'proxy', matrix)
    done = dict(out=out)
    for table in ('table2', 'table3', 'table4'):
        text = (out / 'tables' / f'{table}.md').read_text()
        assert f'**Table {table[-1]} is not run at this scale**' in text
        repro = md_lines(done, table, 'reproduced')
        assert repro and all(r[-5:] == ['not run'] * 5 for r in repro), table
        assert {r['status'] for r in read_csv(out / 'tables' / f'{table}.csv')} == {'not-run'}
    t5 = {r['row']: r['status'] for r in read_csv(out / 'tables' / 'table5.csv')}
    assert t5['r50_v05/forest_rcnn'] == 'paper-only'
    assert t5['r50_v1/seesaw'] == t5['r50_v1'] == 'not-run'
    repro5 = [r[-5:] for r in md_lines(done, 'table5', 'reproduced')]
    assert repro5.count(['—'] * 5) == 1
    assert '"not run": not run at this scale (the suite reproduces the row at other' in (
        out / 'tables' / 'table5.md').read_text()
    assert '**Table 1 is not run' not in (out / 'tables' / 'table1.md').read_text()
    report = (out / 'REPORT.md').read_text()
    assert '- table2: not run at this scale; paper ' in report
