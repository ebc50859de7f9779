"""The rehearsal's data and weights (issue #23, substitutions 1 and 2): the miniature LVIS + COCO
mirror has LVIS's real categories and group sizes and its federated schema, is packed as the real
archives, and `fetch` run against it on 127.0.0.1 lays out exactly what the `full` configs read;
the ImageNet stand-in makes `torchvision://resnet50` load offline into mmdet's ResNet."""
import json
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

import pytest

from pipeline import matrix as mx
from pipeline import runconfig
from pipeline.data import hub_standin, mirror
from pipeline.data.fetch import FetchError, fetch, file_digests, load_sources

GROUPS = {'v1': {'r': 337, 'c': 461, 'f': 405}, 'v0.5': {'r': 454, 'c': 461, 'f': 315}}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp('mirror') / 'mirror'
    return out, mirror.build(out, seed=0)


def _annotations(out, version, split):
    name = f'lvis_{version}_{split}.json'
    with zipfile.ZipFile(out / f'{name}.zip') as zf:
        return json.loads(zf.read(name))


def _fetch(out, root, url, **kw):
    return fetch(root, base_url=url, sources_file=out / 'sources.yaml',
                 lock_file=out / 'sources.lock.json', progress=False, backoff_s=0, **kw)


def _full_layout(root):
    """Where the full scale reads each dataset, moved from data/full to root."""
    matrix = mx.load()
    full_root = mx.data_root(matrix, 'full', 'lvis_v1').parent
    return matrix, {d: root / mx.data_root(matrix, 'full', d).relative_to(full_root)
                    for d in matrix['datasets']}


@pytest.mark.parametrize('version', ['v1', 'v0.5'])
def test_real_category_names_ids_and_group_sizes(built, version):
    from mmdet.datasets.lvis import LVISV05Dataset, LVISV1Dataset
    from mmdet.evaluation.functional.class_names import lvis_classes
    out, _ = built
    expected = (LVISV1Dataset if version == 'v1' else LVISV05Dataset).METAINFO['classes']
    train, val = (_annotations(out, version, s) for s in ('train', 'val'))
    cats = train['categories']
    assert [c['name'] for c in cats] == list(expected)
    if version == 'v1':
        assert [c['name'] for c in cats] == list(lvis_classes())
    assert [c['id'] for c in cats] == list(range(1, len(expected) + 1))
    assert {g: sum(c['frequency'] == g for c in cats) for g in 'rcf'} == GROUPS[version]
    assert val['categories'] == cats


def test_frequency_groups_seeded_and_exact():
    a = mirror.frequency_groups(1203, 'v1', seed=0)
    assert a == mirror.frequency_groups(1203, 'v1', seed=0)
    assert a != mirror.frequency_groups(1203, 'v1', seed=1)
    with pytest.raises(ValueError, match='add up to 1203'):
        mirror.frequency_groups(1230, 'v1', seed=0)


@pytest.mark.parametrize('version', ['v1', 'v0.5'])
@pytest.mark.parametrize('split', ['train', 'val'])
def test_federated_fields_geometry_and_counts(built, version, split):
    out, _ = built
    data = _annotations(out, version, split)
    cat_ids = {c['id'] for c in data['categories']}
    positives = defaultdict(set)
    images = {img['id']: img for img in data['images']}
    assert len({a['id'] for a in data['annotations']}) == len(data['annotations'])
    for a in data['annotations']:
        img = images[a['image_id']]
        positives[a['image_id']].add(a['category_id'])
        (polygon,) = a['segmentation']
        assert len(polygon) >= 12 and len(polygon) % 2 == 0
        x, y, w, h = a['bbox']
        assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
        assert a['area'] > 0 and a['category_id'] in cat_ids
    for img in data['images']:
        neg, nex = img['neg_category_ids'], img['not_exhaustive_category_ids']
        assert neg == sorted(set(neg)) and set(neg) <= cat_ids and neg
        assert not set(neg) & positives[img['id']], 'a category both present and negative'
        assert set(nex) <= positives[img['id']]
        assert (img['width'], img['height']) in mirror.SIZES
        assert img['coco_url'].startswith(mirror.COCO_HOST) and \
            img['coco_url'].endswith(f"2017/{img['id']:012d}.jpg")
        if version == 'v1':
            assert 'file_name' not in img
        else:  # mmdet keeps the last 16 characters of a COCO-2014 name
            assert img['file_name'].startswith(('COCO_train2014_', 'COCO_val2014_'))
            assert img['file_name'][-16:] == f"{img['id']:012d}.jpg"
    if split == 'train':
        image_count, instance_count = defaultdict(set), defaultdict(int)
        for a in data['annotations']:
            image_count[a['category_id']].add(a['image_id'])
            instance_count[a['category_id']] += 1
        for c in data['categories']:
            assert c['image_count'] == len(image_count[c['id']]) >= 1  # as in LVIS: no empty class
            assert c['instance_count'] == instance_count[c['id']]
        assert any(c['instance_count'] > c['image_count'] for c in data['categories'])
    else:  # v1 val also draws from COCO train2017, v0.5 val only from val2017
        folders = [img['coco_url'].split('/')[-2] for img in data['images']]
        assert ('train2017' in folders) == (version == 'v1') and 'val2017' in folders


def test_v05_has_its_own_images_and_annotations(built):
    out, summary = built
    for split in ('train', 'val'):
        v1, v05 = (_annotations(out, v, split) for v in ('v1', 'v0.5'))
        assert not {i['id'] for i in v1['images']} & {i['id'] for i in v05['images']}
        assert len(v1['images']) == summary['num_train' if split == 'train' else 'num_val']
    assert summary['total_bytes'] < 4 << 20


def test_archives_are_packed_as_sources_yaml_says(built):
    out, _ = built
    sources, ours = load_sources(), load_sources(out / 'sources.yaml')
    matrix, roots = _full_layout(Path('/root'))
    lock = json.loads((out / 'sources.lock.json').read_text())['files']
    assert set(lock) == set(sources['files']) == {p.name for p in out.glob('*.zip')}
    assert ours['datasets'] == sources['datasets']
    annotation_files = {mx.annotation_file(matrix, 'full', d, s).name: d
                        for d in matrix['datasets'] for s in ('train', 'val')}
    for name, spec in sources['files'].items():
        sha, md5 = file_digests(out / name, with_md5=True)
        assert lock[name] == dict(sha256=sha, size=(out / name).stat().st_size)
        assert {k: v for k, v in ours['files'][name].items() if k != 'md5'} == \
            {k: v for k, v in spec.items() if k != 'md5'}
        assert ours['files'][name].get('md5') == (md5 if 'md5' in spec else None)
        with zipfile.ZipFile(out / name) as zf:
            members = zf.namelist()
        if name.startswith('lvis_'):  # one JSON, unpacked where the full configs read it
            (member,) = members
            dataset = annotation_files[member]
            assert Path('/root') / spec['extract_to'] / member == \
                roots[dataset] / 'annotations' / member
        else:  # train2017.zip: train2017/ and train2017/<12-digit id>.jpg, the links' target
            folder = name.removesuffix('.zip')
            assert members[0] == f'{folder}/' and len(members) > 1
            assert all(m.startswith(f'{folder}/') and len(m.split('/')[1]) == 16
                       for m in members[1:])
            assert f"{spec['extract_to']}/{folder}" in \
                {t for d in sources['datasets'].values() for t in d['links'].values()}


def test_same_seed_same_bytes(tmp_path):
    a = mirror.build(tmp_path / 'a', seed=3, num_train=4, num_val=1)
    b = mirror.build(tmp_path / 'b', seed=3, num_train=4, num_val=1)
    assert (tmp_path / 'a' / 'sources.lock.json').read_text() == \
        (tmp_path / 'b' / 'sources.lock.json').read_text()
    assert a['archives'] == b['archives']
    with pytest.raises(ValueError, match='use more train images'):
        mirror.build(tmp_path / 'c', seed=3, num_train=2, num_val=1)
    assert not (tmp_path / 'c').exists()


def test_server_answers_ranges_as_fetch_resumes(built):
    out, _ = built
    body = (out / 'val2017.zip').read_bytes()
    with mirror.serve(out) as url:
        def get(path, rng=None):
            headers = {'Range': rng} if rng else {}
            return urllib.request.urlopen(urllib.request.Request(url + path, headers=headers))
        with get('/val2017.zip', 'bytes=10-19') as r:
            assert r.status == 206 and r.read() == body[10:20]
            assert r.headers['Content-Range'] == f'bytes 10-19/{len(body)}'
        with get('/val2017.zip', 'bytes=100-') as r:
            assert r.status == 206 and r.read() == body[100:]
        with pytest.raises(urllib.error.HTTPError) as err:
            get('/val2017.zip', f'bytes={len(body)}-')
        assert err.value.code == 416
        assert err.value.headers['Content-Range'] == f'bytes */{len(body)}'
        for path in ('/nothing.zip', '/../mirror/val2017.zip', '/%2e%2e/x'):
            with pytest.raises(urllib.error.HTTPError, match='404'):
                get(path)


def test_fetch_lays_out_what_the_full_configs_read(built, tmp_path):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from loce.evaluation.lvis_inputs import load_lvis_gt
    out, _ = built
    lock = json.loads((out / 'sources.lock.json').read_text())['files']
    root = tmp_path / 'data'
    with mirror.serve(out) as url:
        summary = _fetch(out, root, url)
        again = _fetch(out, root, url)
    assert {n: (s['status'], s['sha256']) for n, s in summary.items()} == \
        {n: ('downloaded', e['sha256']) for n, e in lock.items()}
    assert {s['status'] for s in again.values()} == {'unpacked'}
    matrix, roots = _full_layout(root)
    full_root = mx.data_root(matrix, 'full', 'lvis_v1').parent
    for dataset in matrix['datasets']:
        for path in mx.annotation_files(matrix, 'full', dataset):
            assert (root / path.relative_to(full_root)).is_file()
    register_all_modules()
    for run, dataset, classes in (('r50_v1', 'lvis_v1', 1203), ('r50_v05', 'lvis_v0.5', 1230)):
        cfg = runconfig.resolve(matrix, 'full', run, 0)
        runconfig.relocate_data(cfg, roots[dataset])
        for loader in ('train_dataloader', 'val_dataloader'):
            data = DATASETS.build(cfg[loader].dataset)
            data.full_init()
            assert len(data.metainfo['classes']) == classes and len(data) > 0
            for i in range(len(data)):
                assert Path(data.get_data_info(i)['img_path']).is_file()
        gt = load_lvis_gt(cfg.val_evaluator.ann_file)
        assert len(gt.getCatIds()) == classes


def test_fetch_resumes_a_partial_archive_with_range(built, tmp_path):
    out, _ = built
    size = (out / 'train2017.zip').stat().st_size
    part = tmp_path / 'data' / 'downloads' / 'train2017.zip.part'
    part.parent.mkdir(parents=True)
    part.write_bytes((out / 'train2017.zip').read_bytes()[:size // 2])
    with mirror.serve(out) as url:
        summary = _fetch(out, tmp_path / 'data', url, datasets=('coco2017',))
    assert summary['train2017.zip']['transferred'] == size - size // 2
    assert summary['val2017.zip']['transferred'] == (out / 'val2017.zip').stat().st_size
    assert (tmp_path / 'data' / 'coco' / 'train2017').is_dir()


@pytest.mark.parametrize('name, check', [('lvis_v1_val.json.zip', 'sha256'),
                                         ('val2017.zip', 'md5')])
def test_a_corrupted_byte_is_refused(built, tmp_path, name, check):
    out, _ = built
    served = tmp_path / 'served'
    shutil.copytree(out, served)
    data = bytearray((served / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (served / name).write_bytes(bytes(data))
    root = tmp_path / 'data'
    with mirror.serve(served) as url, pytest.raises(FetchError, match=f'{check}'):
        _fetch(out, root, url, datasets=('lvis_v1',))
    assert (root / 'downloads' / f'{name}.corrupt').is_file()
    assert not (root / 'downloads' / name).exists()
    unpacked = root / load_sources()['files'][name]['extract_to'] / name.removesuffix('.zip')
    assert not unpacked.exists()


@pytest.mark.parametrize('depth', [50, 101])
def test_standin_has_torchvision_layout_of_mmdet_resnet(depth):
    from mmdet.models.backbones import ResNet
    model = {k: tuple(v.shape) for k, v in ResNet(depth=depth).state_dict().items()
             if not k.endswith('num_batches_tracked')}
    layout = hub_standin.layout(depth)
    assert set(layout) - set(model) == {'fc.weight', 'fc.bias'}
    assert {k: layout[k] for k in model} == model
    assert hub_standin.hub_file_name(depth) == \
        {50: 'resnet50-0676ba61.pth', 101: 'resnet101-63fe2227.pth'}[depth]


def test_torchvision_resnet50_loads_offline_from_the_standin(tmp_path, monkeypatch):
    import torch
    import torch.hub
    from mmdet.models.backbones import ResNet
    from mmengine.runner.checkpoint import _load_checkpoint
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    path = hub_standin.write(tmp_path / 'torch', depths=(50,))[50]
    assert path == tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth'

    def no_download(url, *args, **kwargs):
        raise AssertionError(f'tried to download {url}')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    standin = find_spec('torchvision') is None  # the CPU environment has no torchvision
    if standin:
        monkeypatch.syspath_prepend(str(hub_standin.write_torchvision_standin(tmp_path / 'tv')))
    try:
        weights = _load_checkpoint('torchvision://resnet50', map_location='cpu')
        model = ResNet(depth=50, init_cfg=dict(type='Pretrained',
                                               checkpoint='torchvision://resnet50'))
        model.init_weights()
    finally:
        for module in [m for m in sys.modules if standin and m.split('.')[0] == 'torchvision']:
            del sys.modules[module]
    state = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    assert set(weights) - set(state) == {'fc.weight', 'fc.bias'}  # as with the real file
    assert not set(state) - set(weights)
    assert all(torch.equal(state[k], weights[k]) for k in state)
    assert weights['conv1.weight'].std() == pytest.approx((2 / (3 * 49)) ** 0.5, rel=0.05)


@pytest.mark.parametrize('depth', [50, 101])
def test_standin_backbone_outputs_are_of_a_trained_networks_size(depth):
    """A trained ResNet's stage outputs have a standard deviation of order 1; random residual
    branches at full gain grew it to about 300 at C5, which saturated the detector's softmax (a
    classification loss of 140 and not one detection in the rehearsal's first run)."""
    import torch
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=depth, norm_eval=True)
    model.eval()
    weights = hub_standin.state_dict(depth)
    model.load_state_dict({k: v for k, v in weights.items() if not k.startswith('fc.')},
                          strict=False)
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stds = [float(out.std()) for out in model(image)]
    assert all(0.3 < s < 10 for s in stds), stds
