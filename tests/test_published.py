"""The published results (results/<scale>/) name the resolved config and the code they were
made with, and those are what this checkout has now: a config, matrix or loce/ change that is
not followed by re-making and re-publishing the scale fails here, in seconds. (The slow smoke
test compares the numbers themselves; nothing in CI runs the proxy, so without this check its
published numbers could silently go stale; nor the rehearsal, whose tables CI does not remake.)"""
import json

import pytest

from pipeline import determinism, provenance, runconfig
from pipeline import matrix as mx

SCALES = ('smoke', 'proxy', 'rehearsal')


def _published_records(scale: str):
    """(set, run, seed, metrics record) for every run and seed the scale expects: one set per
    scale, whatever CPU made it (the pin is vendor-neutral: pipeline/determinism.py)."""
    matrix = mx.load()
    root = mx.published_dir(scale)
    for run in mx.runs_at(matrix, scale):
        for seed in mx.run_seeds(matrix, scale, run):
            path = mx.metrics_path(scale, run, seed, root)
            assert path.is_file(), \
                f'{mx.rel(path)} is missing: run `make {scale}`, then publish'
            yield mx.rel(root), run, seed, json.loads(path.read_text())


def test_a_scale_publishes_one_set_and_it_was_made_under_the_pin():
    """Freshness of what is published is required, never the presence of a CPU vendor."""
    for scale in SCALES:
        assert not (mx.published_dir(scale) / 'other-cpus').exists()
        pins = {record['provenance']['cpu'].get('pin') for *_, record in _published_records(scale)}
        assert pins == {determinism.PIN}, f'results/{scale}/: made under pins {pins}'


@pytest.mark.parametrize('scale', SCALES)
def test_every_published_result_names_the_config_its_run_resolves_to_now(scale):
    matrix = mx.load()
    stale = [f'{where}: {run} seed {seed}'
             for where, run, seed, record in _published_records(scale)
             if record['provenance']['config_sha256']
             != runconfig.config_sha256(runconfig.resolve(matrix, scale, run, seed))]
    assert not stale, (f'results/{scale}/ was made from other configs than these runs resolve '
                       f'to now ({", ".join(stale)}): re-make it (make {scale}) and publish')


@pytest.mark.parametrize('scale', SCALES)
def test_every_published_result_was_trained_and_evaluated_by_the_code_here(scale):
    train, evaluate = provenance.code_sha256('train'), provenance.code_sha256('evaluate')
    stale = [f'{where}: {run} seed {seed}'
             for where, run, seed, record in _published_records(scale)
             if (record['provenance']['identity']['code_sha256'],
                 record['provenance']['eval_code_sha256']) != (train, evaluate)]
    assert not stale, (f'results/{scale}/ was trained or evaluated by other code than this '
                       f'checkout has ({", ".join(stale)}): re-make it (make {scale}) and publish')
