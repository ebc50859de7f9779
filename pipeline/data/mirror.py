"""A miniature LVIS v1 + v0.5 and COCO 2017 mirror, packed as the real archives and served on
127.0.0.1, so the `full` scale's fetch code runs for real (download, resume, checksum, unpack,
layout) in the rehearsal of issue #23 without LVIS's content.

What is real here: the archive names and member layout (sources.yaml), the category names and
ids (mmdet's LVISV1Dataset / LVISV05Dataset metainfo, in id order: ids are 1..N as in LVIS), the
category counts (1,203 and 1,230) and the sizes of the frequency groups (v1: 337 rare / 461
common / 405 frequent; v0.5: 454 / 461 / 315), the JSON schema of LVIS's files (federated
`neg_category_ids` and `not_exhaustive_category_ids`, polygon segmentations, `image_count` and
`instance_count` counted on train) and COCO's image naming and sizes.

What is not: pixels, objects and which category falls in which group. No per-category frequency
is available offline (the lvis package and mmdet carry none), so the groups are a permutation of
the category ids drawn from numpy's default_rng([seed, version index]): the first 337 (454) ids
of it are rare, the next 461 common, the rest frequent. Synsets, synonyms and definitions are
stand-ins derived from the name (nothing in the pipeline reads them). Because the groups are
assigned, `frequency` does not follow LVIS's image-count rule here; the counts still match the
train annotations, as in LVIS's files.

Every category is annotated in at least one train image (frequent ones in two), as in LVIS,
whose every category has train images: a class without any would meet zero-count code paths
(priors, memory warm-up) that real LVIS never reaches. Train images therefore hold about 200
small objects each (one per grid cell, never overlapping, so polygons are exactly the visible
pixels); val images hold a dozen larger ones. v0.5 draws other COCO images and annotations than
v1 from the same train2017/val2017 archives, so its runs do not repeat v1's numbers.

Layout, as after unpacking the real archives:
  lvis_v1_{train,val}.json.zip    one member, lvis_v1_{train,val}.json; images carry `coco_url`
                                  (http://images.cocodataset.org/<split>2017/<id:012d>.jpg),
                                  one v1 val image comes from train2017, as in LVIS v1
  lvis_v0.5_{train,val}.json.zip  one member, lvis_v0.5_{train,val}.json; images carry
                                  `file_name` COCO-2014 style (COCO_{train,val}2014_<id>.jpg,
                                  mmdet keeps its last 16 characters) and `coco_url`
  train2017.zip, val2017.zip      members train2017/ and train2017/<id:012d>.jpg (val alike)
  sources.yaml                    the project's sources.yaml with this mirror's md5s
  sources.lock.json               sha256 and size of every archive, in fetch's lock format
Archives are byte-for-byte deterministic in (seed, settings): fixed member times, fixed order.
"""
import argparse
import colorsys
import io
import json
import math
import os
import shutil
import sys
import threading
import zipfile
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import yaml
from PIL import Image, ImageDraw

from .. import atomic
from .fetch import CHUNK, SOURCES, file_digests, load_sources

COCO_HOST = 'http://images.cocodataset.org/'
VERSIONS = ('v1', 'v0.5')
GROUP_SIZES = {'v1': {'r': 337, 'c': 461, 'f': 405}, 'v0.5': {'r': 454, 'c': 461, 'f': 315}}
TRAIN_IMAGES_PER_GROUP = {'r': 1, 'c': 1, 'f': 2}
# COCO's common sizes, landscape and portrait; image k takes SIZES[k % len(SIZES)].
SIZES = ((640, 480), (640, 427), (480, 640), (640, 512))
MIN_CELL = 24  # px: the smallest grid cell a train object is drawn in
VAL_OBJECTS = (8, 16)
NEGATIVES = (15, 40)  # verified-absent categories per image
COCO_MAX_ID = 581929
ZIP_TIME = (2017, 9, 1, 0, 0, 0)


def category_names(version):
    """Class names in category-id order, as mmdet's LVIS datasets declare them."""
    from mmdet.datasets.lvis import LVISV05Dataset, LVISV1Dataset
    dataset = LVISV1Dataset if version == 'v1' else LVISV05Dataset
    return dataset.METAINFO['classes']


def frequency_groups(num_categories, version, seed):
    """r/c/f per category id (index 0 is id 1): exact group sizes, seeded permutation."""
    sizes = GROUP_SIZES[version]
    if sum(sizes.values()) != num_categories:
        raise ValueError(f'LVIS {version}: {num_categories} categories, but the group sizes '
                         f'{sizes} add up to {sum(sizes.values())}')
    order = np.random.default_rng([seed, VERSIONS.index(version)]).permutation(num_categories)
    groups = np.empty(num_categories, dtype='<U1')
    start = 0
    for group in 'rcf':
        groups[order[start:start + sizes[group]]] = group
        start += sizes[group]
    return groups.tolist()


def _colour(category_id):
    """A fixed, saturated colour per category (golden-ratio hue steps)."""
    rgb = colorsys.hsv_to_rgb(category_id * 0.618034 % 1.0, 0.75, 0.9)
    return tuple(round(v * 255) for v in rgb)


def _polygon(cx, cy, radius, rng):
    """A star-shaped polygon around (cx, cy): simple, with 6-10 vertices."""
    n = int(rng.integers(6, 11))
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=n))
    radii = radius * rng.uniform(0.55, 1.0, size=n)
    return [(round(float(cx + r * math.cos(a)), 2), round(float(cy + r * math.sin(a)), 2))
            for a, r in zip(angles, radii)]


def _area(points):
    xs, ys = np.asarray(points, dtype=float).T
    return round(0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))), 2)


def _grid(width, height, count):
    """(cell side, columns, rows) of the largest square grid with at least `count` cells."""
    side = int(math.sqrt(width * height / count))
    while side >= MIN_CELL and (width // side) * (height // side) < count:
        side -= 1
    if side < MIN_CELL:
        raise ValueError(f'{count} objects do not fit a {width}x{height} image in cells of at '
                         f'least {MIN_CELL} px; use more train images')
    return side, width // side, height // side


def _render(width, height, category_ids, rng):
    """An image with one object per category id in shuffled grid cells; (image, geometry)."""
    side, cols, rows = _grid(width, height, len(category_ids))
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(70, 180, size=3)
    slope = rng.uniform(-40, 40, size=(2, 3))
    pixels = (base + xx[..., None] / width * slope[0] + yy[..., None] / height * slope[1]
              + rng.normal(0, 3, size=(height, width, 3)))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x0, y0 = (width - cols * side) / 2, (height - rows * side) / 2
    geometry = []
    for cat, cell in zip(category_ids, rng.permutation(cols * rows)):
        cx = x0 + (cell % cols + 0.5) * side
        cy = y0 + (cell // cols + 0.5) * side
        points = _polygon(cx, cy, side / 2 * rng.uniform(0.7, 0.95), rng)
        draw.polygon(points, fill=_colour(cat))
        xs, ys = zip(*points)
        geometry.append(dict(
            category_id=int(cat), segmentation=[[v for p in points for v in p]],
            bbox=[min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
            area=_area(points)))
    return image, geometry


def _train_members(groups, num_images, rng):
    """Category ids per train image: every category in 1 (r, c) or 2 (f) distinct images, the
    least-loaded images first; some frequent ones twice in an image (instances > images)."""
    members = [[] for _ in range(num_images)]
    load = np.zeros(num_images)
    for index in rng.permutation(len(groups)):
        k = min(TRAIN_IMAGES_PER_GROUP[groups[index]], num_images)
        for i in np.argsort(load + rng.uniform(0, 0.5, size=num_images), kind='stable')[:k]:
            members[i].append(int(index) + 1)
            load[i] += 1
            if groups[index] == 'f' and rng.random() < 0.1:
                members[i].append(int(index) + 1)
                load[i] += 1
    return members


def _images(version, split, ids, members, first_ann_id, num_categories, rng, jpegs):
    """LVIS image and annotation records of one split; renders each image into `jpegs`
    ({'train2017/<id>.jpg': bytes}). The first v1 val image lives in train2017."""
    images, annotations = [], []
    ann_id = first_ann_id
    for k, (image_id, cats) in enumerate(zip(ids, members)):
        width, height = SIZES[k % len(SIZES)]
        folder = 'train2017' if split == 'train' or (version == 'v1' and k == 0) else 'val2017'
        image, geometry = _render(width, height, cats, rng)
        path = f'{folder}/{image_id:012d}.jpg'
        buffer = io.BytesIO()
        image.save(buffer, format='JPEG', quality=90)
        jpegs[path] = buffer.getvalue()
        present = sorted(set(cats))
        absent = np.setdiff1d(np.arange(1, num_categories + 1), present)
        negatives = rng.choice(absent, size=int(rng.integers(*NEGATIVES)), replace=False)
        not_exhaustive = rng.choice(present, size=min(len(present), int(rng.integers(0, 3))),
                                    replace=False)
        record = dict(id=int(image_id), width=width, height=height, license=int(k % 8 + 1),
                      date_captured='2013-11-14 16:28:13',
                      flickr_url=f'http://farm{k % 9 + 1}.staticflickr.com/mirror/'
                                 f'{image_id:012d}.jpg',
                      coco_url=f'{COCO_HOST}{path}',
                      neg_category_ids=sorted(int(c) for c in negatives),
                      not_exhaustive_category_ids=sorted(int(c) for c in not_exhaustive))
        if version == 'v0.5':  # COCO-2014 names; 2017 train mixes 2014 train and val images
            year_split = 'val' if split == 'val' or k % 4 == 3 else 'train'
            record['file_name'] = f'COCO_{year_split}2014_{image_id:012d}.jpg'
        images.append(record)
        for g in geometry:
            annotations.append(dict(id=ann_id, image_id=int(image_id), **g))
            ann_id += 1
    return images, annotations


def _categories(names, groups, train_annotations):
    images_of = [set() for _ in names]
    instances = [0] * len(names)
    for a in train_annotations:
        images_of[a['category_id'] - 1].add(a['image_id'])
        instances[a['category_id'] - 1] += 1
    return [dict(id=k + 1, name=name, synset=f'{name.lower()}.n.01', synonyms=[name],
                 frequency=groups[k], image_count=len(images_of[k]), instance_count=instances[k],
                 **{'def': f'stand-in definition of {name} (rehearsal mirror)'})
            for k, name in enumerate(names)]


def _dataset(version, ids, num_train, first_ann_id, seed, jpegs):
    """{'train': json, 'val': json} of one LVIS version; renders its images into jpegs."""
    names = category_names(version)
    groups = frequency_groups(len(names), version, seed)
    rng = np.random.default_rng([seed, VERSIONS.index(version), 1])
    train_members = _train_members(groups, num_train, rng)
    val_members = [rng.choice(len(names), size=int(rng.integers(*VAL_OBJECTS)),
                              replace=False) + 1 for _ in ids[num_train:]]
    train_images, train_anns = _images(version, 'train', ids[:num_train], train_members,
                                       first_ann_id, len(names), rng, jpegs)
    val_images, val_anns = _images(version, 'val', ids[num_train:], val_members,
                                   first_ann_id + len(train_anns), len(names), rng, jpegs)
    categories = _categories(names, groups, train_anns)
    info = dict(description=f'LVIS {version} miniature mirror (pipeline/data/mirror.py, seed '
                            f'{seed}): real category names and group sizes, synthetic images',
                url='https://www.lvisdataset.org', version=version.lstrip('v'), year=2020,
                contributor='rehearsal mirror', date_created='2020-01-01 00:00:00')
    licenses = [dict(id=k, name=f'license {k}', url='http://creativecommons.org/licenses/')
                for k in range(1, 9)]
    return {split: dict(info=info, licenses=licenses, images=images, annotations=anns,
                        categories=categories)
            for split, images, anns in (('train', train_images, train_anns),
                                        ('val', val_images, val_anns))}


def _write_zip(path, members, compress_type):
    """A zip with fixed member times and order, so equal inputs give equal bytes; a name ending
    in '/' is a folder entry (COCO's zips have them)."""
    with zipfile.ZipFile(path, 'w') as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED if name.endswith('/') else compress_type
            info.external_attr = (0o40755 if name.endswith('/') else 0o100644) << 16
            zf.writestr(info, data)


def archive_members(name):
    """What the real archive `name` holds, as fetch unpacks it: an LVIS annotation zip its one
    JSON (lvis_v1_train.json.zip -> lvis_v1_train.json); a COCO image zip a folder of its stem
    (train2017.zip -> train2017/)."""
    stem = name.removesuffix('.zip')
    return stem if name.startswith('lvis_') else f'{stem}/'


def build(out_dir, *, seed=0, num_train=8, num_val=4, sources_file=SOURCES):
    """Write the mirror into out_dir (replaced atomically: built beside it, then renamed) and
    return a summary. num_train, num_val: images per split and LVIS version; train images hold
    every category between them, so fewer than 4 are too crowded (ValueError)."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train={num_train}, num_val={num_val}: need images in both splits')
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / 'sources.lock.json').exists():
        raise ValueError(f'{out_dir} exists and is not a mirror (no sources.lock.json): '
                         'refusing to replace it; choose another folder')
    sources = load_sources(sources_file)
    per_version = num_train + num_val
    ids = np.random.default_rng([seed, 2]).choice(COCO_MAX_ID, size=2 * per_version,
                                                  replace=False) + 1
    jpegs, annotation_files, summary = {}, {}, dict(seed=seed, num_train=num_train,
                                                    num_val=num_val, datasets={})
    first_ann_id = 1
    for k, version in enumerate(VERSIONS):
        splits = _dataset(version, ids[k * per_version:(k + 1) * per_version].tolist(),
                          num_train, first_ann_id, seed, jpegs)
        for split, data in splits.items():
            annotation_files[f'lvis_{version}_{split}.json'] = json.dumps(
                data, separators=(',', ':')).encode()
            first_ann_id += len(data['annotations'])
        cats = splits['train']['categories']
        summary['datasets'][f'lvis_{version}'] = dict(
            categories=len(cats), frequency={g: sum(c['frequency'] == g for c in cats)
                                             for g in 'rcf'},
            **{split: dict(images=len(d['images']), annotations=len(d['annotations']))
               for split, d in splits.items()})

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f'.{out_dir.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        lock, archives = {'files': {}}, {}
        for name, spec in sources['files'].items():
            member = archive_members(name)
            if member.endswith('/'):
                members = {member: b''} | {p: b for p, b in sorted(jpegs.items())
                                           if p.startswith(member)}
                _write_zip(tmp / name, members, zipfile.ZIP_STORED)
            else:
                _write_zip(tmp / name, {member: annotation_files[member]}, zipfile.ZIP_DEFLATED)
            sha, md5 = file_digests(tmp / name, with_md5=True)
            size = (tmp / name).stat().st_size
            lock['files'][name] = dict(sha256=sha, size=size)
            archives[name] = size
            if 'md5' in spec:  # checked as the real one is
                spec['md5'] = md5
        atomic.write_json(tmp / 'sources.lock.json', lock)
        atomic.write_text(tmp / 'sources.yaml',
                          '# sources.yaml of the rehearsal mirror (pipeline/data/mirror.py): '
                          "the project's, with this mirror's md5s.\n"
                          + yaml.safe_dump(sources, sort_keys=False))
        atomic.replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary.update(out_dir=str(out_dir), archives=archives, total_bytes=sum(archives.values()),
                   sources_file=str(out_dir / 'sources.yaml'),
                   lock_file=str(out_dir / 'sources.lock.json'))
    return summary


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD of the plain files directly in `directory`, with single byte ranges
    (`bytes=START-` or `bytes=START-END`) as fetch's resume sends them."""

    def __init__(self, *args, directory, **kwargs):
        self.directory = directory
        super().__init__(*args, **kwargs)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body):
        name = unquote(urlparse(self.path).path).lstrip('/')
        path = self.directory / name
        if '/' in name or name.startswith('.') or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        spec = self.headers.get('Range')
        if spec:
            first, _, last = spec.removeprefix('bytes=').partition('-')
            if not spec.startswith('bytes=') or not first.isdigit() or \
                    (last and not last.isdigit()):
                self.send_error(400, 'only single byte ranges bytes=START-[END]')
                return
            start, end = int(first), min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{size}')
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{end}/{size}')
        else:
            self.send_response(200)
        self.send_header('Content-Type', 'application/zip')
        self.send_header('Content-Length', str(end - start + 1))
        self.send_header('Accept-Ranges', 'bytes')
        self.end_headers()
        if not body:
            return
        with open(path, 'rb') as f:
            f.seek(start)
            left = end - start + 1
            while left and (block := f.read(min(CHUNK, left))):
                self.wfile.write(block)
                left -= len(block)

    def log_message(self, *args):
        pass


@contextmanager
def serve(directory, port=0):
    """Serve directory's files on 127.0.0.1 (port 0: a free one) in a background thread; yields
    the base URL to give fetch as base_url. The server stops when the block ends."""
    handler = partial(_Handler, directory=Path(directory).resolve())
    server = ThreadingHTTPServer(('127.0.0.1', port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.1),
                              daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv=None):
    """`python -m pipeline.data.mirror build OUT` writes the mirror; `... serve OUT` serves it
    until interrupted, printing its URL first (for a Makefile or a workflow to start and stop)."""
    p = argparse.ArgumentParser(prog='python -m pipeline.data.mirror', description=main.__doc__)
    p.add_argument('action', choices=['build', 'serve'])
    p.add_argument('out_dir')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-train', type=int, default=8, help='train images per LVIS version')
    p.add_argument('--num-val', type=int, default=4, help='val images per LVIS version')
    p.add_argument('--port', type=int, default=0, help='serve: port on 127.0.0.1 (0: any free)')
    args = p.parse_args(argv)
    if args.action == 'build':
        summary = build(args.out_dir, seed=args.seed, num_train=args.num_train,
                        num_val=args.num_val)
        print(json.dumps(summary, indent=2))
        return 0
    if not (Path(args.out_dir) / 'sources.lock.json').is_file():
        raise SystemExit(f'{args.out_dir}: no mirror there; run `python -m pipeline.data.mirror '
                         f'build {args.out_dir}` first')
    with serve(args.out_dir, port=args.port) as url:
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            return 0


if __name__ == '__main__':
    sys.exit(main())
