"""Per-class AP end to end: FastLVISMetric's classwise keys equal the lvis-api's per-category
precision; the evaluate stage asks for them and writes them into the metrics record, whose
validator takes records with and without them; aggregate averages them over seeds."""
import copy
import csv
import json
import logging

import numpy as np
import pytest
from mmengine.config import Config
from test_fast_lvis_metric import _data_samples, _split, make_detections, make_lvis_gt

from loce.evaluation import AP_KEYS, FastLVISMetric
from pipeline import aggregate as ag
from pipeline import evaluate as ev
from pipeline import matrix as mx
from pipeline import records

CLASSES = [dict(id=1, name='a', frequency='f', train_instances=400),
           dict(id=2, name='b', frequency='c', train_instances=30),
           dict(id=3, name='c', frequency='r', train_instances=2)]


def lvis_api_per_class(gt_path, dets, iou_type) -> dict:
    """Per category id: the lvis-api's precision at area 'all', mean over its defined entries
    (mmdet LVISMetric's classwise AP), None where there are none."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(np, 'float', float, raising=False)
        from lvis import LVIS, LVISEval, LVISResults
        gt = LVIS(str(gt_path))
        lvis_eval = LVISEval(gt, LVISResults(gt, copy.deepcopy(dets)), iou_type)
        lvis_eval.run()
    precision = lvis_eval.eval['precision']
    out = {}
    for k, cat_id in enumerate(lvis_eval.params.cat_ids):
        values = precision[:, :, k, 0]
        values = values[values > -1]
        out[cat_id] = float(np.mean(values)) if values.size else None
    return out


def _metric(path, gt, dets, tmp_path, **kwargs):
    cat_ids = [c['id'] for c in gt['categories']]
    metric = FastLVISMetric(ann_file=str(path), metric=['bbox', 'segm'], processes=1, **kwargs)
    samples = _data_samples(gt, dets, cat_ids)
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def test_classwise_ap_equals_the_lvis_api_and_leaves_the_summary_as_it_was(tmp_path):
    rng = np.random.default_rng(0)
    gt = make_lvis_gt(rng)
    path = tmp_path / 'lvis_v1_val.json'
    path.write_text(json.dumps(gt))
    dets = make_detections(rng, gt)
    plain = _metric(path, gt, dets, tmp_path)
    fast = _metric(path, gt, dets, tmp_path, classwise=True, outfile_prefix=str(tmp_path / 'd'))
    assert {k: fast[k] for k in plain} == plain  # to the bit
    cat_ids = sorted(c['id'] for c in gt['categories'])
    assert set(fast) - set(plain) == {f'lvis/{t}_AP_cls{c}' for t in ('bbox', 'segm')
                                      for c in cat_ids}
    for iou_type in ('bbox', 'segm'):
        dumped = json.loads((tmp_path / f'd.{iou_type}.json').read_text())
        assert len(dumped) == len(_split(dets)[iou_type])
        official = lvis_api_per_class(path, dumped, iou_type)
        assert official[21] is None  # category 21 has no GT: undefined, -1 as the summary's
        for cat_id, ap in official.items():
            mine = fast[f'lvis/{iou_type}_AP_cls{cat_id}']
            assert mine == -1 if ap is None else mine == pytest.approx(ap, abs=1e-10), cat_id

    classes = [dict(c, train_instances=sum(a['category_id'] == c['id']
                                           for a in gt['annotations']))
               for c in gt['categories']]
    record = records.metrics(run='r', seed=0, scale='smoke', dataset='lvis_v1', raw=fast,
                             keys=AP_KEYS, provenance={}, classes=classes)
    per_class = record['per_class']
    assert [c['id'] for c in per_class['classes']] == cat_ids
    assert set(per_class['classes'][0]) == {'id', 'name', 'frequency', 'train_instances'}
    k = cat_ids.index(3)
    assert per_class['segm'][k] == round(100 * fast['lvis/segm_AP_cls3'], 2)
    assert per_class['bbox'][cat_ids.index(21)] is None
    records.check_metrics(record, tmp_path / 'r.json', 'r', 0)
    with pytest.raises(SystemExit, match='classwise=True'):
        records.metrics(run='r', seed=0, scale='smoke', dataset='lvis_v1', raw=plain,
                        keys=AP_KEYS, provenance={}, classes=classes)


def metrics_record(run, seed, per_class=None) -> dict:
    tasks = {t: dict.fromkeys(('AP', 'APr', 'APc', 'APf', 'AP50', 'AP75', 'APs', 'APm', 'APl'),
                              10.0) for t in ('bbox', 'segm')}
    record = dict(run=run, seed=seed, scale='smoke', dataset='lvis_v1', **tasks,
                  provenance=dict(config_sha256='0' * 64))
    if per_class is not None:
        record['per_class'] = dict(classes=CLASSES, bbox=per_class[0], segm=per_class[1])
    return record


@pytest.mark.parametrize('change, message', [
    (lambda p: p['segm'].pop(), 'per_class.segm is not a list of 3 APs'),
    (lambda p: p['bbox'].__setitem__(1, 'x'), r"per_class.bbox\[1\] is 'x', not a number"),
    (lambda p: p['classes'][2].__setitem__('frequency', 'rare'), 'frequency is .rare.'),
    (lambda p: p['classes'][1].pop('name'), r'per_class.classes\[1\] lacks one of'),
    (lambda p: [p['classes'].append(dict(CLASSES[0])), p['bbox'].append(1.0),
                p['segm'].append(1.0)], 'lists a class id twice'),
])
def test_the_validator_takes_records_with_and_without_per_class_and_names_a_bad_one(
        tmp_path, change, message):
    path = tmp_path / 'seed0.json'
    records.check_metrics(metrics_record('r', 0), path, 'r', 0)
    good = metrics_record('r', 0, ([50.0, None, 0.0], [40.0, 12.5, None]))
    records.check_metrics(good, path, 'r', 0)
    bad = json.loads(json.dumps(good))
    change(bad['per_class'])
    with pytest.raises(records.RecordError, match=message) as err:
        records.check_metrics(bad, path, 'r', 0)
    assert str(err.value).startswith(str(path)) and '\n' not in str(err.value)


def test_aggregate_averages_per_class_ap_over_seeds(tmp_path):
    """loce_r50_v1: seeds 0 and 1 with per-class AP, seed 2's record from before it (left out);
    r50_v1: one seed; ebl_r50_v1: no per-class AP at all (no rows)."""
    matrix = copy.deepcopy(mx.load())
    matrix['scales']['smoke']['seeds'] = [0, 1, 2]
    paper = ag.load_yaml(ag.PAPER_FILE)
    results = tmp_path / 'smoke'
    given = {('loce_r50_v1', 0): ([50.0, None, 0.0], [40.0, None, 10.0]),
             ('loce_r50_v1', 1): ([60.0, None, 5.0], [45.0, None, None]),
             ('loce_r50_v1', 2): None, ('r50_v1', 0): ([20.0, 7.5, None], [15.0, 5.0, None]),
             ('ebl_r50_v1', 0): None}
    for (run, seed), per_class in given.items():
        path = mx.metrics_path('smoke', run, seed, results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics_record(run, seed, per_class)))
    done = ag.aggregate('smoke', results_dir=results, matrix=matrix, paper=paper,
                        check_configs=False)
    assert results / 'tables' / 'per_class_ap.csv' in done['written']
    with (results / 'tables' / 'per_class_ap.csv').open() as f:
        table = {(r['run'], int(r['category_id'])): r for r in csv.DictReader(f)}
    assert {run for run, _ in table} == {'loce_r50_v1', 'r50_v1'}
    loce = [table['loce_r50_v1', c['id']] for c in CLASSES]
    assert [r['bbox_AP'] for r in loce] == ['55.0', '', '2.5']
    assert [r['segm_AP'] for r in loce] == ['42.5', '', '10.0']  # seed 1's None left out
    assert {r['n_seeds'] for r in loce} == {'2'}
    assert (loce[2]['name'], loce[2]['frequency'], loce[2]['train_instances']) == ('c', 'r', '2')
    assert table['r50_v1', 2]['segm_AP'] == '5.0' and table['r50_v1', 2]['n_seeds'] == '1'
    with (results / 'figures' / 'ap_by_frequency.csv').open() as f:
        points = [(r['run'], int(r['category_id']), r['segm_AP']) for r in csv.DictReader(f)]
    assert points == [('r50_v1', 1, '15.0'), ('r50_v1', 2, '5.0'), ('loce_r50_v1', 1, '42.5'),
                      ('loce_r50_v1', 3, '10.0')]  # Figure 4's runs, defined mask AP only
    assert (results / 'figures' / 'ap_by_frequency.png').stat().st_size > 0


def test_evaluate_asks_for_per_class_ap_and_saves_detections_where_told(tmp_path, monkeypatch):
    """The stage without a model: the runner is replaced by one returning classwise keys."""
    seen = {}

    class Runner:
        logger = logging.getLogger('a stand-in runner')

        @staticmethod
        def from_cfg(cfg):
            seen['evaluator'] = dict(cfg.test_evaluator)
            return Runner

        @staticmethod
        def test():
            raw = {f'lvis/{t}_{k}': 0.25 for t in ('bbox', 'segm') for k in AP_KEYS}
            raw.update({f'lvis/{t}_AP_cls{c["id"]}': 0.5 for t in ('bbox', 'segm')
                        for c in CLASSES})
            return raw

    train = tmp_path / 'train.json'
    train.write_text(json.dumps(dict(categories=[
        dict(id=c['id'], name=c['name'], frequency=c['frequency'],
             instance_count=c['train_instances']) for c in CLASSES[::-1]])))
    cfg = Config(dict(test_evaluator=dict(type='FastLVISMetric', ann_file='val.json')))
    monkeypatch.setattr('mmengine.runner.Runner', Runner)
    monkeypatch.setattr(ev, 'trained', lambda *a: (cfg, '0' * 64, tmp_path / 'w.pth', {}))
    monkeypatch.setattr(mx, 'annotation_file', lambda *a: train)
    monkeypatch.setattr(mx, 'work_dir', lambda *a: tmp_path / 'work')
    monkeypatch.setattr(mx, 'metrics_path', lambda *a: tmp_path / 'seed0.json')
    record = ev.evaluate('smoke', 'loce_r50_v1', 0, out=str(tmp_path / 'dets'))
    assert seen['evaluator'] == dict(type='FastLVISMetric', ann_file='val.json', classwise=True,
                                     outfile_prefix=str(tmp_path / 'dets'))
    assert record['per_class'] == dict(classes=CLASSES, bbox=[50.0] * 3, segm=[50.0] * 3)
    assert ev.fold_per_class in Runner.logger.filters  # the test epoch's log line stays short
    assert records.read_checked('metrics', tmp_path / 'seed0.json', 'loce_r50_v1', 0) == record


def test_the_test_epochs_log_line_folds_per_class_ap_into_a_count():
    """At LVIS's 1,203 classes the per-class keys made mmengine's one log line 50 kB (seen in
    the rehearsal); the summary metrics stay on it, the rest is counted."""
    from pipeline.evaluate import fold_per_class
    items = ''.join(f'  lvis/{task}_AP_cls{c}: 0.{c:04d}' for task in ('bbox', 'segm')
                    for c in range(1, 1204))
    record = logging.LogRecord('mmengine', logging.INFO, __file__, 1,
                               'Epoch(test) [4/4]    lvis/bbox_AP: 0.1000  lvis/segm_AP: 0.2000%s'
                               '  data_time: 0.05', (items,), None)
    assert fold_per_class(record)
    assert record.getMessage() == ('Epoch(test) [4/4]    lvis/bbox_AP: 0.1000  lvis/segm_AP: '
                                   '0.2000  data_time: 0.05  (and 2406 per-class APs: in the '
                                   'metrics record)')
    plain = logging.LogRecord('mmengine', logging.INFO, __file__, 1, 'lvis/bbox_AP: %s', (1,), None)
    assert fold_per_class(plain) and plain.getMessage() == 'lvis/bbox_AP: 1'
