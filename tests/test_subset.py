"""pipeline.data.subset on the synthetic LVIS: deterministic, exact size, r/c/f kept, nothing
recomputed."""
import json

import pytest

from pipeline.data.subset import subset
from pipeline.data.synthetic import smoke_settings, synthesize


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp('subset') / 'smoke'
    synthesize(root, seed=0, **smoke_settings())
    path = root / 'lvis_v1' / 'annotations' / 'lvis_v1_train.json'
    return path, json.loads(path.read_text())


def _groups_present(data):
    freq = {c['id']: c['frequency'] for c in data['categories']}
    return {freq[a['category_id']] for a in data['annotations']}


def test_same_seed_same_bytes_other_seed_other_images(source, tmp_path):
    src, _ = source
    subset(src, tmp_path / 'a.json', num_images=40, seed=0)
    subset(src, tmp_path / 'b.json', num_images=40, seed=0)
    subset(src, tmp_path / 'c.json', num_images=40, seed=1)
    assert (tmp_path / 'a.json').read_bytes() == (tmp_path / 'b.json').read_bytes()
    ids = [{i['id'] for i in json.loads((tmp_path / f'{n}.json').read_text())['images']}
           for n in 'ac']
    assert ids[0] != ids[1]


def test_subset_keeps_records_untouched(source, tmp_path):
    src, data = source
    summary = subset(src, tmp_path / 'sub.json', num_images=40, seed=0)
    sub = json.loads((tmp_path / 'sub.json').read_text())
    kept = {i['id'] for i in sub['images']}
    assert len(sub['images']) == len(kept) == summary['images'] == 40
    # images are the source records (neg / not-exhaustive lists included), in source order
    assert sub['images'] == [i for i in data['images'] if i['id'] in kept]
    # exactly the annotations of kept images, unchanged
    assert sub['annotations'] == [a for a in data['annotations'] if a['image_id'] in kept]
    assert summary['annotations'] == len(sub['annotations'])
    # every category stays, with LVIS's original frequency and counts (not recomputed)
    assert sub['categories'] == data['categories']
    assert sub['info'] == data['info'] and sub['licenses'] == data['licenses']
    assert _groups_present(sub) == {'r', 'c', 'f'}
    assert all(v > 0 for v in summary['categories_present'].values())
    assert any(i['neg_category_ids'] for i in sub['images'])


@pytest.mark.parametrize('n', [3, 10])
def test_tiny_subsets_still_hold_rare_common_and_frequent(source, tmp_path, n):
    src, _ = source
    subset(src, tmp_path / 'sub.json', num_images=n, seed=5)
    sub = json.loads((tmp_path / 'sub.json').read_text())
    assert len(sub['images']) == n
    assert _groups_present(sub) == {'r', 'c', 'f'}


def test_bad_requests_name_the_file(source, tmp_path):
    src, data = source
    for n in (0, len(data['images']) + 1):
        with pytest.raises(ValueError, match=str(src)):
            subset(src, tmp_path / 'sub.json', num_images=n, seed=0)
    with pytest.raises(FileNotFoundError, match='missing.json'):
        subset(tmp_path / 'missing.json', tmp_path / 'sub.json', num_images=1, seed=0)
    unlabelled = dict(data, categories=[{k: v for k, v in c.items() if k != 'frequency'}
                                        for c in data['categories']])
    (tmp_path / 'bad.json').write_text(json.dumps(unlabelled))
    with pytest.raises(ValueError, match='bad.json.*frequency'):
        subset(tmp_path / 'bad.json', tmp_path / 'sub.json', num_images=1, seed=0)
    assert not (tmp_path / 'sub.json').exists()
