"""Paired seed differences, their 95 % t-intervals and the claim verdicts, against a hand
computation; the design criteria checked on the CE baseline."""
import copy
import math
import statistics

import pytest
import yaml

from pipeline import matrix as mx
from pipeline.aggregate import claims

PAPER = yaml.safe_load(mx.PAPER_FILE.read_text())


def _record(ap, apr, apf):
    task = dict(AP=ap, APr=apr, APc=ap, APf=apf)
    return dict(tasks=dict(bbox=dict(task), segm=dict(task)))


def _summary(metrics, criteria=None, rare_scores=(0.05, 0.08)):
    classes = [dict(frequency='r', mean_score=s, val_instances=31 + i)
               for i, s in enumerate(rare_scores)] + [dict(frequency='f', mean_score=0.9,
                                                           val_instances=99)]
    matrix = dict(figure4=dict(a=dict(run='stage1'), c=dict(run='loce')), pretrain={},
                  finetune={}, scales=dict(proxy=dict(criteria=criteria) if criteria else dict()))
    analysis = dict(stage1={0: dict(classes=classes)},
                    loce={s: dict(classes=[dict(c, mean_score=c['mean_score'] + 0.3 + 0.05 * s)
                                           for c in classes]) for s in range(3)})
    cells = {f'table1/{row}': row for row in PAPER['tables']['table1']['rows']}
    return dict(scale='proxy', matrix=matrix, cells=cells, paper=PAPER,
                results=dict(metrics=metrics, analysis=analysis))


BASE = {0: _record(20.0, 2.0, 60.0), 1: _record(21.0, 3.0, 61.0), 2: _record(20.5, 2.5, 59.0)}
LOCE = {0: _record(23.0, 9.0, 60.5), 1: _record(24.0, 10.0, 61.0), 2: _record(23.5, 12.0, 59.2)}


def test_paired_interval_is_the_t_interval_of_the_per_seed_differences():
    stat = claims.paired(dict(metrics=dict(loce=LOCE, base=BASE)), 'loce', 'base', 'segm', 'APr')
    diffs = [7.0, 7.0, 9.5]
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)
    assert stat['n'] == 3 and stat['mean'] == pytest.approx(statistics.mean(diffs))
    assert (stat['lo'], stat['hi']) == pytest.approx((statistics.mean(diffs) - half,
                                                      statistics.mean(diffs) + half))
    assert claims.verdict(stat) == 'holds'


def test_verdicts_by_where_the_interval_lies():
    assert claims.verdict(dict(lo=-2.0, hi=-0.5)) == 'does not hold'
    assert claims.verdict(dict(lo=-0.5, hi=1.0)) == 'inconclusive (interval spans 0)'
    assert claims.verdict(claims.interval([3.0])) == 'inconclusive (fewer than two seeds)'


def test_only_seeds_both_runs_have_are_paired():
    partial = {0: LOCE[0], 2: LOCE[2]}
    stat = claims.paired(dict(metrics=dict(loce=partial, base=BASE)), 'loce', 'base', 'segm', 'AP')
    assert stat['n'] == 2 and stat['mean'] == pytest.approx(3.0)


def test_section_lists_each_claim_with_its_verdict():
    metrics = dict(baseline=BASE, loce=LOCE, ebl=BASE, mfs=LOCE, prior=BASE, ce_decoupled=BASE)
    lines = '\n'.join(claims.section(_summary(metrics)))
    assert ('- LOCE raises mask APr over the CE baseline (30 epochs, end to end): **holds**'
            in lines)
    assert '- EBL raises mask APr over the CE baseline (30 epochs, end to end): **inconclusive' in lines
    assert '- LOCE raises mask APr more than EBL alone: **holds**' in lines
    # LOCE's rare scores are 0.3, 0.35, 0.4 above the shared stage-1 model's
    assert 'rare group): **holds** (+0.35 [' in lines


def test_a_baseline_not_run_at_the_scale_is_said_so_and_claims_none_against_it():
    """The rehearsal runs no 30-epoch baseline: its table must not read "against (`None`)"."""
    metrics = dict(loce=LOCE, ebl=BASE, mfs=LOCE, prior=BASE, ce_decoupled=BASE)
    summary = _summary(metrics)
    del summary['cells']['table1/baseline']
    lines = '\n'.join(claims.section(summary))
    assert 'Against the CE baseline (30 epochs, end to end): not run at this scale.' in lines
    assert '`None`' not in lines and 'over the CE baseline (30 epochs' not in lines
    assert '- LOCE raises mask APr more than EBL alone: **holds**' in lines


def test_criteria_are_measured_on_the_baseline_and_checked():
    criteria = dict(baseline_apf_min=50, baseline_apr_share_max=0.3333, rare_mean_score_max=0.1,
                    rare_val_instances_min=30, baseline_ap_std_max=1.0)
    text = '\n'.join(claims.criteria_section(_summary(dict(baseline=BASE), criteria)))
    assert '| CE baseline mask APf | 60.000 | ≥ 50 | yes |' in text
    assert f'| CE baseline mask APr / APf | {2.5 / 60:.3f} | ≤ 0.3333 | yes |' in text
    assert '| Figure 4(a) rare-group mean score | 0.065 | ≤ 0.1 | yes |' in text
    assert '| fewest val instances of a rare class | 31 | ≥ 30 | yes |' in text
    assert f'| CE baseline seed std of mask AP | {statistics.stdev([20, 21, 20.5]):.3f} | ≤ 1.0 | yes |' in text
    noisy = {**BASE, 1: _record(23.0, 3.0, 61.0)}
    text = '\n'.join(claims.criteria_section(_summary(dict(baseline=noisy), criteria)))
    assert '| CE baseline seed std of mask AP' in text and '| NO |' in text


def test_per_seed_section_lists_every_row_and_seed_with_its_values():
    lines = claims.section(_summary(dict(baseline=BASE, loce=LOCE)))
    start = lines.index('## Table 1 seed by seed')
    end = lines.index('## Table 1 against seed noise (paired by seed)')
    rows = [line for line in lines[start:end] if line.startswith('| ')][1:]
    assert [row.split(' | ')[:2] for row in rows] == [
        ['| baseline (`baseline`)', '0'], ['| baseline (`baseline`)', '1'],
        ['| baseline (`baseline`)', '2'], ['| loce (`loce`)', '0'], ['| loce (`loce`)', '1'],
        ['| loce (`loce`)', '2']]
    # box AP, APr, APc, APf, then the same for mask: LOCE seed 2 is _record(23.5, 12.0, 59.2)
    assert rows[5] == ('| loce (`loce`) | 2 | 23.50 | 12.00 | 23.50 | 59.20 | 23.50 | 12.00 | '
                       '23.50 | 59.20 |')


def test_no_per_seed_section_with_one_seed():
    lines = claims.section(_summary(dict(baseline={0: BASE[0]}, loce={0: LOCE[0]})))
    assert '## Table 1 seed by seed' not in lines


def test_claims_and_baselines_are_read_from_paper_yaml():
    """Table 1's claims live beside its numbers in pipeline/paper.yaml: one added there is read
    off its own paired difference (mfs − baseline mask APf: +0.5, 0.0, +0.2 by seed)."""
    summary = _summary(dict(baseline=BASE, loce=LOCE, ebl=BASE, mfs=LOCE, prior=BASE,
                            ce_decoupled=BASE))
    paper = copy.deepcopy(PAPER)
    paper['tables']['table1']['claims'].append(
        dict(text='MFS keeps mask APf against {base}', row='mfs', than='base', metric='APf'))
    summary['paper'] = paper
    lines = claims.section(summary)
    diffs = [0.5, 0.0, 0.2]
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)
    mean = statistics.mean(diffs)
    assert (f'- MFS keeps mask APf against the CE baseline (30 epochs, end to end): '
            f'**inconclusive (interval spans 0)** ({mean:+.2f} [{mean - half:+.2f}, '
            f'{mean + half:+.2f}])') in lines
    assert sum(line.startswith('- MFS keeps mask APf') for line in lines) == 2  # both baselines
    baselines, rows = claims.table1_rows(PAPER)
    assert list(baselines) == ['baseline', 'ce_decoupled']
    assert rows == ('ebl', 'mfs', 'loce', 'prior', 'ce_decoupled')
