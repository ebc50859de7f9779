"""Download and unpack the real LVIS annotations and COCO 2017 images (stage `fetch`).

Why it is written out rather than calling mmdet's download_dataset.py: that script lists
lvis_v1_train.json.zip twice and never fetches lvis_v1_val.json.zip, and a 19 GB download over
days must survive dropped connections, flaky servers and full disks without ever handing a
truncated or altered archive to training. So, per archive:

- it downloads to <name>.part and resumes with an HTTP Range request after an interruption
  (a server that ignores Range and answers 200 makes it start over, never append twice);
- connection resets, timeouts and 5xx answers are retried with exponential backoff; a 404 or
  other 4xx stops at once with the URL in the message;
- free space is checked against Content-Length before the body is read, and ENOSPC while
  writing stops with the path and the number of bytes needed;
- the finished file is checked against Content-Length, the size and md5 in sources.yaml where
  given, and the sha256 in sources.lock.json; with no sha256 recorded yet (neither LVIS nor
  COCO publishes one) the first verified download records it, to be committed. A mismatch
  moves the file to <name>.corrupt, where it is never used, and stops with the URL;
- only then is it renamed to <name> and unpacked (into a temp folder, then renamed into place);
  a marker holding the archive's sha256 makes later runs skip both download and unpacking.

Only the standard library (urllib) and tqdm are used, so the stage runs anywhere Python does.
"""
import errno
import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import yaml
from tqdm import tqdm

from .. import atomic

HERE = Path(__file__).resolve().parent
SOURCES = HERE / 'sources.yaml'
LOCK = HERE / 'sources.lock.json'
DATASETS = ('lvis_v1', 'lvis_v0.5', 'coco2017')
CHUNK = 1 << 20
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class FetchError(RuntimeError):
    """A download or unpacking problem that retrying cannot fix; the message says what to do."""


class _Transient(Exception):
    """A failure worth retrying (reset, timeout, 5xx, body cut short); `received` counts the
    body bytes that attempt still wrote to the part file."""

    def __init__(self, message, received=0):
        super().__init__(message)
        self.received = received


def load_sources(path=SOURCES):
    """The `files` and `datasets` tables of sources.yaml."""
    sources = yaml.safe_load(Path(path).read_text())
    if not isinstance(sources, dict) or not {'files', 'datasets'} <= sources.keys():
        raise FetchError(f'{path}: needs top-level `files` and `datasets` tables')
    return sources


def _read_lock(path):
    path = Path(path)
    if not path.exists():
        return {'files': {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FetchError(f'{path}: not valid JSON ({err}); restore it from git') from None


def file_digests(path, with_md5=False):
    """sha256 (and md5 if asked) of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5() if with_md5 else None
    with open(path, 'rb') as f:
        while block := f.read(CHUNK):
            sha.update(block)
            if md5:
                md5.update(block)
    return sha.hexdigest(), md5.hexdigest() if md5 else None


def _content_range(value):
    """(start, total) from 'bytes START-END/TOTAL' or 'bytes */TOTAL'."""
    spec, _, total = value.split(' ', 1)[1].partition('/')
    start = None if spec == '*' else int(spec.split('-')[0])
    return start, None if total == '*' else int(total)


def _need_space(url, path, needed):
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise FetchError(f'{url}: not enough disk space in {path.parent}: {needed} bytes needed, '
                         f'{free} free; free space or move the data root, then re-run')


def _transfer(url, part, size, timeout_s, progress):
    """One HTTP attempt that appends to (or restarts) part; returns body bytes received."""
    have = part.stat().st_size if part.exists() else 0
    headers = {'User-Agent': 'loce-repro-fetch'}
    if have:
        headers['Range'] = f'bytes={have}-'
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            _, total = _content_range(err.headers.get('Content-Range', 'bytes */*'))
            if total == have:
                return 0  # the part already holds the whole file
            part.unlink()
            raise _Transient(f'HTTP 416 for a {have}-byte part; starting over') from None
        if err.code in RETRY_STATUS:
            raise _Transient(f'HTTP {err.code} {err.reason}') from None
        raise FetchError(f'{url}: HTTP {err.code} {err.reason}; check the address in '
                         f'{SOURCES.name} or the --base-url mirror') from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f'{type(err).__name__}: {err}') from None
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers['Content-Range'])
            if start != have:
                part.unlink()
                raise _Transient(f'server resumed at byte {start}, not {have}; starting over')
        else:
            length = response.headers.get('Content-Length')
            start, total = 0, int(length) if length is not None else None
        if size is not None and total is not None and total != size:
            raise FetchError(f'{url}: server announces {total} bytes, expected {size} (from '
                             f'{SOURCES.name} or {LOCK.name}); the file changed upstream or the '
                             'mirror is wrong')
        if total is not None:
            _need_space(url, part, total - start)
        received = 0
        with open(part, 'ab' if start else 'wb') as out, \
                tqdm(total=total, initial=start, unit='B', unit_scale=True, unit_divisor=1024,
                     desc=part.name[:-5], file=sys.stderr, disable=not progress) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _Transient(f'{type(err).__name__} after {received} bytes',
                                     received) from None
                if not block:
                    break
                try:
                    out.write(block)
                except OSError as err:
                    if err.errno == errno.ENOSPC:
                        raise FetchError(f'{url}: disk full (ENOSPC) writing {part}; free '
                                         'space and re-run to resume') from None
                    raise
                received += len(block)
                bar.update(len(block))
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Transient(f'connection closed at byte {got} of {total}', received)
    return received


def _set_aside(url, part, dest, reason):
    corrupt = dest.with_name(dest.name + '.corrupt')
    os.replace(part, corrupt)
    raise FetchError(f'{url}: {reason}; the file was moved to {corrupt} and will not be used. '
                     'Delete it and re-run; if the upstream file really changed, remove its '
                     f'entry from {LOCK.name} to record the new checksum')


def download(url, dest, *, sha256=None, md5=None, size=None, retries=5, backoff_s=2.0,
             timeout_s=60.0, progress=True):
    """Download url to dest (see the module docstring) and return
    dict(sha256, size, transferred): transferred counts body bytes over all attempts."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    transferred = 0
    for attempt in range(retries + 1):
        try:
            transferred += _transfer(url, part, size, timeout_s, progress)
            break
        except _Transient as err:
            transferred += err.received
            if attempt == retries:
                raise FetchError(f'{url}: giving up after {retries + 1} attempts ({err}); '
                                 f're-run to resume from {part}') from None
            print(f'[fetch] {url}: {err}; retry {attempt + 1}/{retries}', file=sys.stderr)
            time.sleep(backoff_s * 2 ** attempt)
    got = part.stat().st_size
    if size is not None and got != size:
        _set_aside(url, part, dest, f'{got} bytes, expected {size}')
    got_sha, got_md5 = file_digests(part, with_md5=md5 is not None)
    if md5 is not None and got_md5 != md5:
        _set_aside(url, part, dest, f'md5 mismatch: got {got_md5}, expected {md5}')
    if sha256 is not None and got_sha != sha256:
        _set_aside(url, part, dest, f'checksum mismatch: sha256 {got_sha}, expected {sha256}')
    os.replace(part, dest)
    return dict(sha256=got_sha, size=got, transferred=transferred)


def _verified(path, locked):
    """Whether an archive on disk matches its lock entry. A stamp beside it (size, mtime,
    sha256) spares re-hashing 19 GB on every run."""
    if not path.exists() or not locked or path.stat().st_size != locked['size']:
        return False
    stamp = path.with_name(f'.{path.name}.verified')
    seen = dict(size=path.stat().st_size, mtime_ns=path.stat().st_mtime_ns,
                sha256=locked['sha256'])
    if stamp.exists() and json.loads(stamp.read_text()) == seen:
        return True
    if file_digests(path)[0] != locked['sha256']:
        return False
    atomic.write_json(stamp, seen)
    return True


def _safe_members(archive, zf):
    for name in zf.namelist():
        p = PurePosixPath(name)
        if p.is_absolute() or '..' in p.parts:
            raise FetchError(f'{archive}: unsafe member path {name!r}; the archive is not the '
                             'official one, delete it and re-run')


def extract(archive, target_dir):
    """Unpack archive into target_dir: into a temp folder first, then each top-level entry is
    renamed into place, so a crash never leaves a half-filled train2017/. Returns the names of
    the top-level entries."""
    archive, target_dir = Path(archive), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target_dir / f'.{archive.name}.extracting'
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            _safe_members(archive, zf)
            _need_space(str(archive), tmp, sum(i.file_size for i in zf.infolist()))
            zf.extractall(tmp)
    except (zipfile.BadZipFile, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, zipfile.BadZipFile):
            raise FetchError(f'{archive}: not a valid zip ({err}); delete it and its entry in '
                             f'{LOCK.name}, then re-run') from None
        if err.errno == errno.ENOSPC:
            raise FetchError(f'{archive}: disk full unpacking into {target_dir}; free space '
                             'and re-run') from None
        raise
    entries = sorted(tmp.iterdir())
    for entry in entries:
        dst = target_dir / entry.name
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        os.replace(entry, dst)
    tmp.rmdir()
    return [e.name for e in entries]


def _unpacked(marker, locked):
    """Whether the marker says this exact archive was unpacked and its entries still exist."""
    if not locked or not marker.exists():
        return False
    record = json.loads(marker.read_text())
    return (record.get('sha256') == locked['sha256']
            and all((marker.parent / e).exists() for e in record['entries']))


def _link(data_root, link, target):
    """Relative symlink data_root/link -> data_root/target; a real folder already there (the
    user unpacked images into it) is left alone."""
    path = data_root / link
    rel = os.path.relpath(data_root / target, path.parent)
    if path.is_symlink():
        if os.readlink(path) == rel:
            return
        path.unlink()
    elif path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(rel, path)


def fetch(data_root, *, datasets=DATASETS, base_url=None, sources_file=SOURCES, lock_file=LOCK,
          retries=5, backoff_s=2.0, timeout_s=60.0, progress=True):
    """Bring the named datasets into data_root (default layout: data/lvis_v1/annotations,
    data/lvis_v0.5/annotations, data/coco/{train,val}2017 and the links to it) and return a
    summary {archive: {status, sha256, transferred}} with status 'unpacked' (nothing to do),
    'verified' (archive on disk was valid) or 'downloaded'.

    base_url replaces each address up to its file name (mirrors, tests); archives are kept in
    data_root/downloads/ (delete them after unpacking if space is short: the unpack markers
    keep later runs from downloading again). The committed lock records only what the official
    addresses served: a mirror's files are checked against it, and recorded only in a lock file
    of the mirror's own (lock_file).
    """
    data_root = Path(data_root)
    sources = load_sources(sources_file)
    unknown = sorted(set(datasets) - set(sources['datasets']))
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; {sources_file} defines "
                         f"{sorted(sources['datasets'])}")
    names = list(dict.fromkeys(f for d in datasets for f in sources['datasets'][d]['files']))
    lock = _read_lock(lock_file)
    summary = {}
    for name in names:
        spec = sources['files'][name]
        url = spec['url'] if base_url is None else f"{base_url.rstrip('/')}/{name}"
        archive = data_root / 'downloads' / name
        target = data_root / spec['extract_to']
        marker = target / f'.{name}.unpacked'
        locked = lock['files'].get(name)
        if _unpacked(marker, locked):
            summary[name] = dict(status='unpacked', sha256=locked['sha256'], transferred=0)
            continue
        if _verified(archive, locked):
            summary[name] = dict(status='verified', sha256=locked['sha256'], transferred=0)
        else:
            if archive.exists():
                # unverifiable as it stands: let the resume logic check it against the server
                os.replace(archive, archive.with_name(name + '.part'))
            got = download(url, archive, sha256=locked and locked['sha256'], md5=spec.get('md5'),
                           size=spec.get('size') or (locked and locked['size']),
                           retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                           progress=progress)
            if not locked and (base_url is None or Path(lock_file).resolve() != LOCK.resolve()):
                lock['files'][name] = dict(sha256=got['sha256'], size=got['size'])
                atomic.write_json(lock_file, lock)
            summary[name] = dict(status='downloaded', sha256=got['sha256'],
                                 transferred=got['transferred'])
        entries = extract(archive, target)
        atomic.write_json(marker, dict(sha256=summary[name]['sha256'], entries=entries))
    for d in datasets:
        for link, target in sources['datasets'][d]['links'].items():
            _link(data_root, link, target)
    return summary
