"""`compare` and `publish` on hand-made records: bit-exact wherever both sides ran under the same
CPU pin and torch build, whatever CPU made them (one set per scale); otherwise the scale's bands,
with the reason printed."""
import json

import pytest

from pipeline import aggregate, determinism
from pipeline import matrix as mx
from pipeline import published

SCALE, RUN = 'smoke', 'r50_v1'
XEON = 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz'
EPYC = 'AMD EPYC 7R13 Processor'


def _write(root, cpu_model, ap, score, pinned=True, dirty=False, pin=determinism.PIN):
    cpu = {'cpu_model': cpu_model, 'isa_pinned': pinned, 'pin': pin if pinned else None}
    metrics = {'run': RUN, 'seed': 0, 'bbox': {'AP': ap, 'APr': None},
               'segm': {'AP': 20.0, 'APr': None},
               'provenance': {'config_sha256': 'c0ffee', 'git_dirty': dirty, 'cpu': cpu}}
    red_circle = {'id': 1, 'name': 'red_circle', 'frequency': 'f', 'train_instances': 9,
                  'val_instances': 3, 'mean_score': score, 'accuracy': 0.5, 'accuracy_fg': 0.5}
    analysis = {'run': RUN, 'seed': 0, 'classes': [red_circle], 'provenance': {}}
    for path, record in ((mx.metrics_path(SCALE, RUN, 0, root), metrics),
                         (mx.analysis_path(SCALE, RUN, 0, root), analysis)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


@pytest.fixture
def roots(tmp_path):
    return tmp_path / 'fresh', tmp_path / 'published'


def test_cpus_of_two_vendors_under_one_pin_compare_to_the_bit(roots, capsys):
    _write(roots[0], EPYC, 10.0 + 1e-9, 0.3)
    _write(roots[1], XEON, 10.0, 0.3)
    d = published.differences(SCALE, *roots)
    assert d['exact'] and d['tolerance'] is None and d['inexact_because'] == []
    assert d['compared'] == 6  # bbox AP, APr; segm AP, APr; the class's score and accuracy
    assert [c[3] for c in d['differing']] == ['bbox.AP']  # a last-bit change is a difference
    assert published.compare(SCALE, *roots) == 1
    assert 'comparison exact' in capsys.readouterr().out
    _write(roots[0], EPYC, 10.0, 0.3)
    assert published.compare(SCALE, *roots) == 0
    assert f'[compare] identical: 6 values of {roots[0]} vs published {roots[1]}' \
        in capsys.readouterr().out


def test_a_record_of_another_pin_falls_back_to_the_bands_and_says_why(roots, capsys):
    """e.g. a record made under the earlier AVX2-only pin, which differed across vendors."""
    tolerance = mx.scale(mx.load(), SCALE)['tolerance']
    _write(roots[0], EPYC, 10.0 + 0.9 * tolerance, 0.3 + 0.9 * published.SCORE_TOLERANCE)
    _write(roots[1], XEON, 10.0, 0.3, pin='avx2')
    reason = (f'the two sides ran under different CPU pins (avx2, {determinism.PIN}; '
              'provenance.cpu.pin)')
    d = published.differences(SCALE, *roots)
    assert not d['exact'] and d['tolerance'] == tolerance and d['differing'] == []
    assert d['inexact_because'] == [reason]
    assert published.compare(SCALE, *roots) == 0
    out = capsys.readouterr().out
    assert out.startswith('[compare] within tolerance: 6 values')
    assert f'±{tolerance} AP and ±{published.SCORE_TOLERANCE} score/accuracy: {reason}' in out


@pytest.mark.parametrize('field', ['ap', 'score'])
def test_beyond_a_band_differs(roots, field):
    ap = 10.0 + (1.1 * mx.scale(mx.load(), SCALE)['tolerance'] if field == 'ap' else 0)
    score = 0.3 + (1.1 * published.SCORE_TOLERANCE if field == 'score' else 0)
    _write(roots[0], EPYC, ap, score, pinned=False)
    _write(roots[1], XEON, 10.0, 0.3)
    d = published.differences(SCALE, *roots)
    want = 'bbox.AP' if field == 'ap' else 'red_circle.mean_score'
    assert [c[3] for c in d['differing']] == [want]
    assert published.compare(SCALE, *roots) == 1


def test_an_unpinned_side_is_not_compared_to_the_bit(roots):
    _write(roots[0], XEON, 10.0 + 1e-9, 0.3, pinned=False)
    _write(roots[1], XEON, 10.0, 0.3)
    d = published.differences(SCALE, *roots)
    assert d['inexact_because'] == ['the CPU pin did not hold on one side (see provenance.cpu)']
    assert d['differing'] == []


def test_another_torch_build_is_not_compared_to_the_bit(roots):
    """Measured: the smoke r50_v1 in the CUDA image (torch 2.6.0+cu124, on CPU) gave bbox AP
    11.56 where the host's torch 2.13.0 gives 10.58, both pinned, on one AMD EPYC."""
    _write(roots[0], EPYC, 10.0 + 1e-9, 0.3)
    _write(roots[1], EPYC, 10.0, 0.3)
    assert published.differences(SCALE, *roots)['exact']
    for root, build in zip(roots, ('2.6.0+cu124', '2.13.0')):
        path = mx.metrics_path(SCALE, RUN, 0, root)
        record = json.loads(path.read_text())
        record['provenance']['cpu']['torch_build_sha256'] = build
        path.write_text(json.dumps(record))
    d = published.differences(SCALE, *roots)
    assert d['inexact_because'] == ['the two sides ran different torch builds '
                                    '(provenance.cpu.torch_build), whose CPU kernels compute '
                                    'differently']
    assert d['differing'] == []


@pytest.fixture
def publishing(tmp_path, monkeypatch):
    """work/smoke/results and results/smoke in tmp_path, each results dir holding REPORT.md."""
    src, dest = tmp_path / 'work', tmp_path / 'results'
    monkeypatch.setattr(mx, 'results_dir', lambda scale: src)
    monkeypatch.setattr(mx, 'published_dir', lambda scale: dest)
    monkeypatch.setattr(aggregate, 'collect_missing', lambda scale, root: [])
    src.mkdir()
    (src / 'REPORT.md').write_text('report')
    return src, dest


def _bbox_ap(root):
    return json.loads(mx.metrics_path(SCALE, RUN, 0, root).read_text())['bbox']['AP']


def test_publishing_replaces_the_whole_set_whoever_made_it(publishing):
    """One set per scale: a set made on another vendor's CPUs, or a leftover of the per-vendor
    sets, never survives a publish to go stale beside it."""
    src, dest = publishing
    _write(src, XEON, 10.0, 0.3)
    published.publish(SCALE)
    (dest / 'other-cpus' / 'AMD').mkdir(parents=True)
    _write(src, EPYC, 12.5, 0.4)
    published.publish(SCALE)
    assert _bbox_ap(dest) == 12.5 and (dest / 'REPORT.md').is_file()
    assert sorted(p.name for p in dest.iterdir()) == ['REPORT.md', 'analysis', 'metrics']


def test_publishing_refuses_uncommitted_code(publishing):
    src, _ = publishing
    _write(src, XEON, 10.0, 0.3, dirty=True)
    with pytest.raises(SystemExit, match='made on uncommitted code'):
        published.publish(SCALE)
