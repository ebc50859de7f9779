"""pipeline.data.fetch against a real HTTP server on 127.0.0.1 serving small zips named like
the official archives, with switches for a dropped connection, ignored Range, corrupted bytes,
a 5xx and a 404."""
import errno
import hashlib
import json
import os
import random
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import yaml

from pipeline.data import fetch as fetch_mod
from pipeline.data.fetch import FetchError, download, extract, fetch, load_sources


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        name = self.path.lstrip('/')
        entry = dict(path=name, range=self.headers.get('Range'), status=None, sent=0)
        srv.log.append(entry)
        if name in srv.fail_once:
            entry['status'] = srv.fail_once.pop(name)
            self.send_error(entry['status'])
            return
        body = srv.files.get(name)
        if body is None:
            entry['status'] = 404
            self.send_error(404)
            return
        if name in srv.corrupt:
            body = body[:1000] + bytes(b ^ 0xFF for b in body[1000:1100]) + body[1100:]
        start = 0
        if entry['range'] and not srv.ignore_range:
            start = int(entry['range'][len('bytes='):-1])
            if start >= len(body):
                entry['status'] = 416
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(body)}')
                self.end_headers()
                return
            entry['status'] = 206
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        else:
            entry['status'] = 200
            self.send_response(200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if name in srv.drop_once:
            srv.drop_once.discard(name)
            payload = payload[:len(payload) // 2]
            self.close_connection = True
        entry['sent'] = len(payload)  # before writing: the client may finish first
        self.wfile.write(payload)
        self.wfile.flush()

    def log_message(self, *args):
        pass


def _zip(path, members):
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


@pytest.fixture
def server(tmp_path):
    rng = random.Random(0)
    members = {}
    for name in ('lvis_v1_train', 'lvis_v1_val', 'lvis_v0.5_train', 'lvis_v0.5_val'):
        members[f'{name}.json.zip'] = {
            f'{name}.json': json.dumps(dict(name=name, pad=rng.randbytes(100_000).hex()))}
    members['train2017.zip'] = {f'train2017/{i:012d}.jpg': rng.randbytes(120_000) for i in (1, 2)}
    members['val2017.zip'] = {'val2017/000000000139.jpg': rng.randbytes(150_000)}
    (tmp_path / 'srv').mkdir()
    srv = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.daemon_threads = True
    srv.files = {name: _zip(tmp_path / 'srv' / name, m) for name, m in members.items()}
    srv.members = members
    srv.log, srv.drop_once, srv.corrupt, srv.fail_once = [], set(), set(), {}
    srv.ignore_range = False
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}'
    thread = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.05),
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _fetch(server, root, **kw):
    """fetch() with the real sources.yaml, minus the md5s of the real COCO zips."""
    sources = load_sources()
    for spec in sources['files'].values():
        spec.pop('md5', None)
    root.mkdir(parents=True, exist_ok=True)
    (root / 'sources.yaml').write_text(yaml.safe_dump(sources))
    kw.setdefault('datasets', ('lvis_v1', 'lvis_v0.5', 'coco2017'))
    kw.setdefault('lock_file', root / 'lock.json')
    return fetch(root, base_url=server.url, sources_file=root / 'sources.yaml',
                 backoff_s=0, progress=False, **kw)


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def test_sources_name_the_official_addresses():
    files = load_sources()['files']
    assert files['lvis_v1_val.json.zip']['url'] == \
        'https://dl.fbaipublicfiles.com/LVIS/lvis_v1_val.json.zip'
    assert files['train2017.zip']['url'] == 'http://images.cocodataset.org/zips/train2017.zip'
    assert set(files) == {'lvis_v1_train.json.zip', 'lvis_v1_val.json.zip',
                          'lvis_v0.5_train.json.zip', 'lvis_v0.5_val.json.zip',
                          'train2017.zip', 'val2017.zip'}


def test_interrupted_download_resumes_with_range(server, tmp_path):
    name = 'lvis_v1_train.json.zip'
    body = server.files[name]
    server.drop_once.add(name)
    got = download(f'{server.url}/{name}', tmp_path / name, retries=2, backoff_s=0,
                   progress=False)
    first, second = server.log
    assert first['range'] is None and 0 < first['sent'] < len(body)
    assert second['range'] == f"bytes={first['sent']}-" and second['status'] == 206
    assert second['sent'] == len(body) - first['sent']
    assert got == dict(sha256=_sha(body), size=len(body), transferred=len(body))
    assert (tmp_path / name).read_bytes() == body
    assert not (tmp_path / f'{name}.part').exists()


def test_server_ignoring_range_makes_it_start_over(server, tmp_path):
    name = 'val2017.zip'
    body = server.files[name]
    server.drop_once.add(name)
    server.ignore_range = True
    download(f'{server.url}/{name}', tmp_path / name, retries=2, backoff_s=0, progress=False)
    assert server.log[1]['range'] is not None and server.log[1]['status'] == 200
    assert (tmp_path / name).read_bytes() == body


def test_5xx_is_retried(server, tmp_path):
    name = 'val2017.zip'
    server.fail_once[name] = 503
    download(f'{server.url}/{name}', tmp_path / name, retries=2, backoff_s=0, progress=False)
    assert [e['status'] for e in server.log] == [503, 200]
    assert (tmp_path / name).read_bytes() == server.files[name]


def test_404_names_the_url_and_is_not_retried(server, tmp_path):
    del server.files['lvis_v1_val.json.zip']
    with pytest.raises(FetchError, match=f'{server.url}/lvis_v1_val.json.zip: HTTP 404'):
        _fetch(server, tmp_path / 'data', datasets=('lvis_v1',))
    assert [e['status'] for e in server.log if e['path'] == 'lvis_v1_val.json.zip'] == [404]


def test_corrupted_payload_is_set_aside_and_not_extracted(server, tmp_path):
    name = 'lvis_v1_val.json.zip'
    root = tmp_path / 'data'
    root.mkdir()
    lock = {'files': {name: dict(sha256=_sha(server.files[name]), size=len(server.files[name]))}}
    (root / 'lock.json').write_text(json.dumps(lock))
    server.corrupt.add(name)
    with pytest.raises(FetchError, match=f'{server.url}/{name}: checksum mismatch') as err:
        _fetch(server, root, datasets=('lvis_v1',))
    corrupt = root / 'downloads' / f'{name}.corrupt'
    assert str(corrupt) in str(err.value)
    assert corrupt.exists() and _sha(corrupt.read_bytes()) != lock['files'][name]['sha256']
    assert not (root / 'downloads' / name).exists()
    assert not (root / 'lvis_v1' / 'annotations' / 'lvis_v1_val.json').exists()
    assert json.loads((root / 'lock.json').read_text())['files'][name] == lock['files'][name]


def test_md5_mismatch_is_set_aside(server, tmp_path):
    name = 'val2017.zip'
    with pytest.raises(FetchError, match='md5 mismatch'):
        download(f'{server.url}/{name}', tmp_path / name, md5='0' * 32, retries=0,
                 progress=False)
    assert (tmp_path / f'{name}.corrupt').exists() and not (tmp_path / name).exists()


def test_layout_lock_and_no_request_when_present(server, tmp_path):
    root = tmp_path / 'data'
    summary = _fetch(server, root)
    assert {v['status'] for v in summary.values()} == {'downloaded'}
    for version in ('v1', 'v0.5'):
        for split in ('train', 'val'):
            ann = root / f'lvis_{version}' / 'annotations' / f'lvis_{version}_{split}.json'
            assert json.loads(ann.read_text())['name'] == f'lvis_{version}_{split}'
        for split in ('train2017', 'val2017'):
            link = root / f'lvis_{version}' / split
            assert link.is_symlink() and os.readlink(link) == f'../coco/{split}'
    for member, data in {**server.members['train2017.zip'],
                         **server.members['val2017.zip']}.items():
        assert (root / 'coco' / member).read_bytes() == data
        assert (root / 'lvis_v1' / member).read_bytes() == data
        assert (root / 'lvis_v0.5' / member).read_bytes() == data
    lock = json.loads((root / 'lock.json').read_text())['files']
    assert lock == {n: dict(sha256=_sha(b), size=len(b)) for n, b in server.files.items()}
    requests = len(server.log)
    assert requests == len(server.files)

    again = _fetch(server, root)
    assert len(server.log) == requests
    assert {v['status'] for v in again.values()} == {'unpacked'}

    (root / 'lvis_v1' / 'annotations' / 'lvis_v1_train.json').unlink()
    third = _fetch(server, root)
    assert len(server.log) == requests
    assert third['lvis_v1_train.json.zip']['status'] == 'verified'
    assert (root / 'lvis_v1' / 'annotations' / 'lvis_v1_train.json').exists()


def test_present_archive_failing_its_lock_is_not_used(server, tmp_path):
    root = tmp_path / 'data'
    _fetch(server, root, datasets=('coco2017',))
    archive = root / 'downloads' / 'val2017.zip'
    (root / 'coco' / '.val2017.zip.unpacked').unlink()
    damaged = bytearray(archive.read_bytes())
    damaged[500] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    with pytest.raises(FetchError, match='checksum mismatch'):
        _fetch(server, root, datasets=('coco2017',))
    assert (root / 'downloads' / 'val2017.zip.corrupt').exists() and not archive.exists()


def test_free_space_checked_before_the_body(server, tmp_path, monkeypatch):
    name = 'train2017.zip'
    monkeypatch.setattr(fetch_mod.shutil, 'disk_usage', lambda path: SimpleNamespace(free=10))
    with pytest.raises(FetchError, match=f'{server.url}/{name}: not enough disk space'):
        download(f'{server.url}/{name}', tmp_path / name, retries=0, progress=False)
    assert not (tmp_path / f'{name}.part').exists()


def test_enospc_while_writing_names_the_url(server, tmp_path, monkeypatch):
    real_open = open

    class _Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, block):
            raise OSError(errno.ENOSPC, 'No space left on device')

    def fake_open(path, mode='r', *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _Full(f) if mode in ('wb', 'ab') else f

    monkeypatch.setattr(fetch_mod, 'open', fake_open, raising=False)
    name = 'val2017.zip'
    with pytest.raises(FetchError, match=f'{server.url}/{name}: disk full'):
        download(f'{server.url}/{name}', tmp_path / name, retries=3, backoff_s=0,
                 progress=False)
    assert len(server.log) == 1


def test_unsafe_or_broken_archives_are_refused(tmp_path):
    evil = tmp_path / 'evil.zip'
    _zip(evil, {'../outside.json': '{}'})
    with pytest.raises(FetchError, match='unsafe member'):
        extract(evil, tmp_path / 'out')
    broken = tmp_path / 'broken.zip'
    broken.write_bytes(b'not a zip')
    with pytest.raises(FetchError, match='broken.zip: not a valid zip'):
        extract(broken, tmp_path / 'out')
    assert not (tmp_path / 'outside.json').exists() and not any((tmp_path / 'out').iterdir())


def test_a_mirror_never_writes_the_committed_lock(server, tmp_path, monkeypatch):
    """The committed lock records what the official hosts serve; a mirror's files (a miniature
    one for a rehearsal, or a stale copy) must not become the checksums a real download is
    held to later."""
    import pipeline.data.fetch as fetch_module
    committed = tmp_path / 'committed.lock.json'
    committed.write_text(json.dumps({'files': {}}))
    monkeypatch.setattr(fetch_module, 'LOCK', committed)
    summary = _fetch(server, tmp_path / 'data', lock_file=committed)
    assert {v['status'] for v in summary.values()} == {'downloaded'}
    assert json.loads(committed.read_text()) == {'files': {}}
