"""`compare` and `publish` on hand-made records: bit-exact only where both sides ran with the CPU
pin on CPUs of one vendor, using the published set of the fresh run's vendor where there is one;
otherwise the scale's bands, with the reason printed."""
import json

import pytest

from pipeline import aggregate
from pipeline import matrix as mx
from pipeline import published

SCALE, RUN = 'smoke', 'r50_v1'
XEON = 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz'
XEON_OLD = 'Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz'
EPYC = 'AMD EPYC 7R13 Processor'
AMD_REASON = ('the CPU pin held on both sides, but on CPUs of different vendors (AMD and Intel), '
              'whose kernel libraries compute differently (see pipeline/published.py)')


def _write(root, cpu_model, ap, score, pinned=True, dirty=False):
    metrics = {'bbox': {'AP': ap, 'APr': None}, 'segm': {'AP': 20.0, 'APr': None},
               'provenance': {'config_sha256': 'c0ffee', 'git_dirty': dirty,
                              'cpu': {'cpu_model': cpu_model, 'isa_pinned': pinned}}}
    analysis = {'classes': [{'name': 'red_circle', 'mean_score': score, 'accuracy': 0.5}]}
    for path, record in ((mx.metrics_path(SCALE, RUN, 0, root), metrics),
                         (mx.analysis_path(SCALE, RUN, 0, root), analysis)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


@pytest.fixture
def roots(tmp_path):
    return tmp_path / 'fresh', tmp_path / 'published'


def test_the_vendor_is_read_from_the_model_name():
    assert published.cpu_vendor({'cpu_model': XEON}) == 'Intel'
    assert published.cpu_vendor({'cpu_model': EPYC}) == 'AMD'
    assert published.cpu_vendor({'cpu_model': 'Apple M2'}) == 'Apple M2'
    assert published.cpu_vendor({}) == 'unknown CPU'


def test_two_intel_cpus_compare_to_the_bit(roots, capsys):
    _write(roots[0], XEON, 10.0 + 1e-9, 0.3)
    _write(roots[1], XEON_OLD, 10.0, 0.3)
    d = published.differences(SCALE, *roots)
    assert d['exact'] and d['tolerance'] is None and d['inexact_because'] == []
    assert d['compared'] == 6  # bbox AP, APr; segm AP, APr; the class's score and accuracy
    assert [c[3] for c in d['differing']] == ['bbox.AP']
    assert published.compare(SCALE, *roots) == 1
    assert 'comparison exact' in capsys.readouterr().out


def test_another_vendor_without_its_own_set_falls_back_to_the_bands_and_says_why(roots, capsys):
    tolerance = mx.scale(mx.load(), SCALE)['tolerance']
    _write(roots[0], EPYC, 10.0 + 0.9 * tolerance, 0.3 + 0.9 * published.SCORE_TOLERANCE)
    _write(roots[1], XEON, 10.0, 0.3)
    d = published.differences(SCALE, *roots)
    assert not d['exact'] and d['tolerance'] == tolerance and d['differing'] == []
    assert d['inexact_because'] == [AMD_REASON]
    assert published.compare(SCALE, *roots) == 0
    out = capsys.readouterr().out
    assert out.startswith('[compare] within tolerance: 6 values')
    assert f'±{tolerance} AP and ±{published.SCORE_TOLERANCE} score/accuracy: {AMD_REASON}' in out


@pytest.mark.parametrize('field', ['ap', 'score'])
def test_another_vendor_beyond_a_band_differs(roots, field):
    ap = 10.0 + (1.1 * mx.scale(mx.load(), SCALE)['tolerance'] if field == 'ap' else 0)
    score = 0.3 + (1.1 * published.SCORE_TOLERANCE if field == 'score' else 0)
    _write(roots[0], EPYC, ap, score)
    _write(roots[1], XEON, 10.0, 0.3)
    d = published.differences(SCALE, *roots)
    want = 'bbox.AP' if field == 'ap' else 'red_circle.mean_score'
    assert [c[3] for c in d['differing']] == [want]
    assert published.compare(SCALE, *roots) == 1


def test_a_run_is_compared_to_the_bit_with_the_set_of_its_own_vendor(roots, capsys):
    fresh, pub = roots
    _write(fresh, EPYC, 12.5, 0.4)
    _write(pub, XEON, 10.0, 0.3)  # the main set: Intel
    amd = pub / published.OTHER_CPUS / 'AMD'
    _write(amd, EPYC, 12.5, 0.4)
    d = published.differences(SCALE, fresh, pub)
    assert d['exact'] and d['differing'] == [] and d['published_roots'] == [amd]
    assert published.compare(SCALE, fresh, pub) == 0
    assert f'[compare] identical: 6 values of {fresh} vs published {amd}' in capsys.readouterr().out
    _write(amd, EPYC, 12.5 + 1e-9, 0.4)  # a last-bit change in the AMD set is a difference
    assert [c[3] for c in published.differences(SCALE, fresh, pub)['differing']] == ['bbox.AP']
    _write(fresh, XEON, 10.0, 0.3)  # an Intel run keeps to the main set
    assert published.differences(SCALE, fresh, pub)['published_roots'] == [pub]


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


def test_publishing_another_vendor_adds_its_records_and_keeps_the_main_set(publishing):
    src, dest = publishing
    _write(src, XEON, 10.0, 0.3)
    published.publish(SCALE)
    with pytest.raises(SystemExit, match='made on Intel CPUs: publish without --other-cpu'):
        published.publish(SCALE, other_cpu=True)
    _write(src, EPYC, 12.5, 0.4)
    published.publish(SCALE, other_cpu=True)
    amd = dest / published.OTHER_CPUS / 'AMD'
    assert _bbox_ap(dest) == 10.0 and _bbox_ap(amd) == 12.5
    assert (dest / 'REPORT.md').is_file() and not (amd / 'REPORT.md').exists()
    _write(src, XEON, 11.0, 0.3)  # a new Intel main set keeps the AMD records
    published.publish(SCALE)
    assert _bbox_ap(dest) == 11.0 and _bbox_ap(amd) == 12.5
    _write(src, EPYC, 13.0, 0.4)  # an AMD main set replaces them: one set per vendor
    published.publish(SCALE)
    assert _bbox_ap(dest) == 13.0 and not (dest / published.OTHER_CPUS).exists()


def test_publishing_refuses_uncommitted_code_and_mixed_vendors(publishing):
    src, _ = publishing
    _write(src, XEON, 10.0, 0.3, dirty=True)
    with pytest.raises(SystemExit, match='made on uncommitted code'):
        published.publish(SCALE)
    _write(src, XEON, 10.0, 0.3)
    other = mx.metrics_path(SCALE, 'ebl_r50_v1', 0, src)
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({'bbox': {}, 'provenance': {'cpu': {'cpu_model': EPYC}}}))
    with pytest.raises(SystemExit, match=r"several vendors \(\['AMD', 'Intel'\]\)"):
        published.publish(SCALE)
