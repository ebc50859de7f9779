"""Synthetic tiny LVIS: an offline, seeded, long-tailed dataset in LVIS v1 and v0.5 format.

Why it exists: the smoke scale must run the whole pipeline (train, fine-tune, LVIS evaluation,
per-class analysis) on CPU in minutes, and the long-tail effect LOCE corrects must really show
up. So every category is a (shape, colour) pair laid out on a grid: the diagonal cells
(red square, green triangle, ...) are the head classes, and every other cell shares its shape
with one head class and its colour with another. A rare "red triangle" then sits between a
frequent "red square" and a frequent "green triangle", and a detector trained with plain softmax
cross-entropy is pulled towards the frequent neighbours and scores it low.

Image counts per category are planned exactly (head classes in more than 100 train images, a
middle band of 15-80, a tail of at most 8), but the frequency labels written to the JSON are
computed afterwards from the generated train annotations by LVIS's rule, never assigned.

Layout (what MMDetection's LVIS datasets expect):
  <out>/lvis_v1/annotations/lvis_v1_{train,val}.json    images have `coco_url`
  <out>/lvis_v1/{train,val}2017/<id:012d>.jpg           LVISV1Dataset strips the COCO host
  <out>/lvis_v0.5/annotations/lvis_v0.5_{train,val}.json images have `file_name`
                                                         COCO_{train,val}2014_<id:012d>.jpg
  <out>/lvis_v0.5/{train,val}2017 -> ../lvis_v1/{train,val}2017   (relative symlinks)
LVISV05Dataset cuts COCO-2014-style names to their last 16 characters (<id:012d>.jpg) and
joins them to data_prefix 'train2017/' or 'val2017/', as in mmdet's lvis_v0.5 base config, so
both versions read the same image files. The v0.5 variant carries the same annotations.
"""
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .. import atomic

COCO_HOST = 'http://images.cocodataset.org/'
RARE_MAX_IMAGES = 10  # LVIS: rare = 1-10 train images, common = 11-100, frequent = more
COMMON_MAX_IMAGES = 100
HEAD_MIN_IMAGES = 111  # planned floor of head classes, kept clear of the 100-image boundary
MIDDLE_IMAGES = (80, 15)
TAIL_MAX_IMAGES = 8
OBJECT_SIZE = (0.22, 0.40)  # object side as a fraction of the image side
MIN_OBJECT_SIZE = 0.12
DUPLICATE_PROB = 0.15  # chance that a present category gets a second annotated instance
NOT_EXHAUSTIVE_PROB = 0.03  # chance that an image gets one unannotated extra instance
NEG_FRACTION = 0.7  # share of absent categories listed as verified negatives (federated)

# Unit-box polygons (x, y in [0, 1]); drawn axis-aligned so shape stays the identifying cue.
_CIRCLE = [(0.5 + 0.5 * math.cos(2 * math.pi * k / 32), 0.5 + 0.5 * math.sin(2 * math.pi * k / 32))
           for k in range(32)]
_STAR = [(0.5 + (0.5 if k % 2 == 0 else 0.2) * math.sin(k * math.pi / 5),
          0.52 - (0.5 if k % 2 == 0 else 0.2) * math.cos(k * math.pi / 5)) for k in range(10)]
SHAPES = {
    'square': [(0, 0), (1, 0), (1, 1), (0, 1)],
    'triangle': [(0.5, 0), (1, 1), (0, 1)],
    'circle': _CIRCLE,
    'diamond': [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)],
    'star': _STAR,
    'cross': [(1 / 3, 0), (2 / 3, 0), (2 / 3, 1 / 3), (1, 1 / 3), (1, 2 / 3), (2 / 3, 2 / 3),
              (2 / 3, 1), (1 / 3, 1), (1 / 3, 2 / 3), (0, 2 / 3), (0, 1 / 3), (1 / 3, 1 / 3)],
    'ell': [(0, 0), (0.4, 0), (0.4, 0.6), (1, 0.6), (1, 1), (0, 1)],
    'hourglass': [(0, 0), (1, 0), (0.6, 0.5), (1, 1), (0, 1), (0.4, 0.5)],
}
COLOURS = {
    'red': (220, 30, 30),
    'green': (30, 170, 50),
    'blue': (30, 70, 220),
    'yellow': (235, 215, 30),
    'magenta': (210, 40, 210),
    'cyan': (30, 210, 220),
    'orange': (245, 130, 20),
    'black': (20, 20, 20),
}
MAX_CATEGORIES = len(SHAPES) * len(COLOURS)


def smoke_settings():
    """Keyword arguments of `synthesize` for the smoke scale (300 train / 60 val images at
    128 px, 16 categories: 4 head, 6 middle, 6 tail), kept in one place so the CLI, configs and
    tests agree on it."""
    return dict(num_train=300, num_val=60, image_size=128, num_categories=16,
                head_fraction=0.5, tail_images=2, rare_share=0.5, val_min_images=2,
                max_objects=4)


def frequency_label(image_count):
    """LVIS's frequency group of a category from the number of train images it appears in."""
    if image_count < 1:
        raise ValueError(f'a category with {image_count} train images has no LVIS frequency')
    if image_count <= RARE_MAX_IMAGES:
        return 'r'
    return 'c' if image_count <= COMMON_MAX_IMAGES else 'f'


def category_design(num_categories, rare_share=0.5):
    """The (shape, colour) grid, in category-id order (ids 1.. follow sorted names, as LVIS ids
    follow sorted synsets). It depends only on the number of categories, never on the seed, so
    configs can name the classes before any data exists.

    Each entry: name, shape, colour and the planned role 'head' (diagonal cell), 'middle' or
    'tail'. Off-diagonal cells are listed by their colour offset d (cell (i, i + d)); each
    complete offset band holds every shape and every colour once. Middle classes take the
    smallest offsets and tail classes the largest, so whenever there are at least `side` of
    each, every shape and every colour has a middle and a tail member.
    """
    if not 1 <= num_categories <= MAX_CATEGORIES:
        raise ValueError(f'num_categories={num_categories}: must be 1..{MAX_CATEGORIES} '
                         f'({len(SHAPES)} shapes x {len(COLOURS)} colours)')
    if not 0 <= rare_share <= 1:
        raise ValueError(f'rare_share={rare_share}: must be in [0, 1]')
    side = math.ceil(math.sqrt(num_categories))
    shapes, colours = list(SHAPES)[:side], list(COLOURS)[:side]
    head = [(i, i) for i in range(side)][:num_categories]
    others = [(i, (i + d) % side) for d in range(1, side) for i in range(side)]
    others = others[:num_categories - len(head)]
    num_middle = len(others) - round(rare_share * len(others))
    cells = ([(cell, 'head') for cell in head] + [(cell, 'middle') for cell in others[:num_middle]]
             + [(cell, 'tail') for cell in others[num_middle:]])
    design = [dict(name=f'{colours[j]}_{shapes[i]}', shape=shapes[i], colour=colours[j], role=role)
              for (i, j), role in cells]
    return sorted(design, key=lambda d: d['name'])


def class_names(num_categories):
    """Class names in category-id order, for `metainfo=dict(classes=...)` in configs."""
    return tuple(d['name'] for d in category_design(num_categories))


def planned_image_counts(design, *, num_train, head_fraction, tail_images):
    """Train images per category: head classes spread geometrically from
    head_fraction * num_train down to at least HEAD_MIN_IMAGES, middle classes from 80 to 15,
    tail classes from TAIL_MAX_IMAGES down to tail_images. This is where imbalance is set."""
    head = round(head_fraction * num_train)
    if head < HEAD_MIN_IMAGES or head > num_train:
        raise ValueError(f'head_fraction * num_train = {head}: must lie in '
                         f'[{HEAD_MIN_IMAGES}, num_train={num_train}] so that frequent classes '
                         f'(> {COMMON_MAX_IMAGES} train images) exist; raise num_train or '
                         'head_fraction')
    if not 1 <= tail_images <= TAIL_MAX_IMAGES:
        raise ValueError(f'tail_images={tail_images}: must be 1..{TAIL_MAX_IMAGES}')
    bands = {'head': (head, max(HEAD_MIN_IMAGES, round(0.7 * head))),
             'middle': MIDDLE_IMAGES, 'tail': (TAIL_MAX_IMAGES, tail_images)}
    counts = np.zeros(len(design), dtype=int)
    for role, (hi, lo) in bands.items():
        idx = [k for k, d in enumerate(design) if d['role'] == role]
        if idx:
            counts[idx] = np.rint(np.geomspace(hi, lo, num=len(idx))).astype(int)
    return counts


def _allocate(counts, num_images, max_objects, rng, what):
    """Choose, for each category, exactly counts[c] distinct images, with at most max_objects
    categories and at least one per image. Small categories go first and prefer emptier images;
    images left empty then take a category from an image holding two or more, which keeps every
    category's image count exact."""
    total = int(counts.sum())
    if not num_images <= total <= num_images * max_objects:
        raise ValueError(f'{what}: {total} planned category occurrences cannot fill {num_images} '
                         f'images with 1..{max_objects} categories each; change the number of '
                         'images, categories or max_objects')
    members = [[] for _ in range(num_images)]
    load = np.zeros(num_images, dtype=int)
    for c in np.argsort(counts, kind='stable'):
        free = np.flatnonzero(load < max_objects)
        if len(free) < counts[c]:
            raise ValueError(f'{what}: no room for {counts[c]} images of category {c}; lower '
                             'head_fraction or raise max_objects')
        weight = (max_objects - load[free]).astype(float) ** 2
        for i in rng.choice(free, size=counts[c], replace=False, p=weight / weight.sum()):
            members[i].append(int(c))
            load[i] += 1
    for empty in np.flatnonzero(load == 0):
        donor = int(np.argmax(load))
        members[empty].append(members[donor].pop())
        load[empty], load[donor] = 1, load[donor] - 1
    return members


def _compose(members, design, max_objects, rng):
    """Per image: the list of (category index, annotated) objects, plus its not-exhaustive
    categories. Duplicates make instance counts differ from image counts as in LVIS; an
    unannotated extra instance is exactly what LVIS marks as not exhaustively annotated."""
    images = []
    for cats in members:
        objects = [(c, True) for c in cats]
        for c in cats:
            if len(objects) < max_objects and rng.random() < DUPLICATE_PROB:
                objects.append((c, True))
        not_exhaustive = []
        if len(objects) < max_objects and rng.random() < NOT_EXHAUSTIVE_PROB:
            c = int(rng.choice(cats))
            objects.append((c, False))
            not_exhaustive.append(c)
        absent = [c for c in range(len(design)) if c not in cats]
        negatives = [c for c in absent if rng.random() < NEG_FRACTION]
        images.append((objects, not_exhaustive, negatives))
    return images


def _free_spot(side, boxes, image_size, rng):
    """A box of about this side that keeps a 2 px gap to all others, or None."""
    aspect = rng.uniform(0.85, 1.15)
    w, h = side * aspect, side / aspect
    for _ in range(60):
        x, y = rng.uniform(1, image_size - w - 1), rng.uniform(1, image_size - h - 1)
        if all(x + w + 2 < bx or bx + bw + 2 < x or y + h + 2 < by or by + bh + 2 < y
               for bx, by, bw, bh in boxes):
            return x, y, w, h
    return None


def _place(num_objects, image_size, rng):
    """Non-overlapping boxes (x, y, w, h), so polygon masks are exactly the visible pixels;
    an object that does not fit is shrunk rather than allowed to occlude another."""
    boxes = []
    for _ in range(num_objects):
        side = rng.uniform(*OBJECT_SIZE) * image_size
        box = None
        while box is None:
            if side < MIN_OBJECT_SIZE * image_size:
                raise RuntimeError(f'cannot place {num_objects} objects in a {image_size} px '
                                   'image; lower max_objects or raise image_size')
            box = _free_spot(side, boxes, image_size, rng)
            side *= 0.9
        boxes.append(box)
    return boxes


def _polygon_area(points):
    xs, ys = np.asarray(points, dtype=float).T
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def _render(objects, design, image_size, rng):
    """Draw one image; returns it and the annotation geometry of its annotated objects."""
    base = rng.uniform(80, 170) + rng.uniform(-12, 12, size=3)
    pixels = base + rng.normal(0, 6, size=(image_size, image_size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    geometry = []
    for (c, annotated), (x, y, w, h) in zip(objects, _place(len(objects), image_size, rng)):
        spec = design[c]
        points = [(round(x + u * w, 2), round(y + v * h, 2)) for u, v in SHAPES[spec['shape']]]
        colour = np.clip(np.array(COLOURS[spec['colour']]) + rng.integers(-15, 16, size=3), 0, 255)
        draw.polygon(points, fill=tuple(int(v) for v in colour))
        if annotated:
            xs, ys = zip(*points)
            geometry.append(dict(
                category=c,
                segmentation=[[v for p in points for v in p]],
                bbox=[min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
                area=round(_polygon_area(points), 2)))
    return image, geometry


def _split(split, num_images, first_image_id, first_ann_id, counts, design, settings, rng,
           image_dir):
    """Allocate, compose and render one split; returns its LVIS image and annotation records."""
    members = _allocate(counts, num_images, settings['max_objects'], rng, f'{split} split')
    images, annotations = [], []
    ann_id = first_ann_id
    for k, (objects, not_exhaustive, negatives) in enumerate(
            _compose(members, design, settings['max_objects'], rng)):
        image_id = first_image_id + k
        image, geometry = _render(objects, design, settings['image_size'], rng)
        image.save(image_dir / f'{image_id:012d}.jpg', quality=92)
        images.append(dict(
            id=image_id, width=settings['image_size'], height=settings['image_size'],
            coco_url=f'{COCO_HOST}{split}2017/{image_id:012d}.jpg',
            neg_category_ids=sorted(c + 1 for c in negatives),
            not_exhaustive_category_ids=sorted(c + 1 for c in not_exhaustive)))
        for g in geometry:
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=g['category'] + 1,
                                    segmentation=g['segmentation'], bbox=g['bbox'],
                                    area=g['area']))
            ann_id += 1
    return images, annotations


def _categories(design, train_annotations):
    """LVIS category records; counts and frequency come from the generated train split."""
    images_of = [set() for _ in design]
    instances = np.zeros(len(design), dtype=int)
    for a in train_annotations:
        images_of[a['category_id'] - 1].add(a['image_id'])
        instances[a['category_id'] - 1] += 1
    return [{'id': k + 1, 'name': d['name'], 'synset': f"{d['name']}.n.01",
             'synonyms': [d['name']], 'def': f"a solid {d['colour']} {d['shape']}",
             'frequency': frequency_label(len(images_of[k])), 'image_count': len(images_of[k]),
             'instance_count': int(instances[k])}
            for k, d in enumerate(design)]


def _as_v05(images, split):
    """v0.5 images name their file COCO-2014 style (LVISV05Dataset keeps the last 16 chars)."""
    return [dict(img, file_name=f"COCO_{split}2014_{img['id']:012d}.jpg") for img in images]


def synthesize(out_root, *, seed, num_train=300, num_val=60, image_size=128, num_categories=16,
               head_fraction=0.5, tail_images=2, rare_share=0.5, val_min_images=2,
               max_objects=4):
    """Write the synthetic LVIS v1 and v0.5 datasets under out_root (replacing it atomically:
    built in a sibling temp dir, then renamed) and return a summary dict.

    Deterministic in (seed, settings). num_train/num_val: images per split; image_size: square
    side in px; num_categories: grid cells used (<= 64); head_fraction: share of train images
    holding the most frequent class; tail_images: train images of the rarest class;
    rare_share: share of non-diagonal classes planned as tail; val_min_images: floor of val
    images per class, so every rare class is evaluated; max_objects: objects per image (>= 1).
    """
    settings = dict(num_train=num_train, num_val=num_val, image_size=image_size,
                    num_categories=num_categories, head_fraction=head_fraction,
                    tail_images=tail_images, rare_share=rare_share,
                    val_min_images=val_min_images, max_objects=max_objects)
    if min(num_train, num_val, max_objects, val_min_images) < 1 or image_size < 32:
        raise ValueError(f'synthesize settings {settings}: image counts, max_objects and '
                         'val_min_images must be >= 1 and image_size >= 32')
    start = time.perf_counter()
    design = category_design(num_categories, rare_share)
    train_counts = planned_image_counts(design, num_train=num_train, head_fraction=head_fraction,
                                        tail_images=tail_images)
    val_counts = np.maximum(val_min_images, np.rint(train_counts * num_val / num_train)).astype(int)

    out_root = Path(out_root)
    # Empty folders are not data: workflow managers create the outputs' folders before a job.
    holds_files = out_root.exists() and any(p.is_file() or p.is_symlink() for p in out_root.rglob('*'))
    if holds_files and not (out_root / 'synthetic.json').exists():
        raise ValueError(f'{out_root} exists and was not written by synthesize (no '
                         'synthetic.json): refusing to replace it; choose another out_root')
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = out_root.with_name(f'.{out_root.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_root, ignore_errors=True)
    v1, v05 = tmp_root / 'lvis_v1', tmp_root / 'lvis_v0.5'
    for d in (v1 / 'annotations', v1 / 'train2017', v1 / 'val2017', v05 / 'annotations'):
        d.mkdir(parents=True)
    try:
        rng_train, rng_val = (np.random.default_rng([seed, k]) for k in (0, 1))
        train_images, train_anns = _split('train', num_train, 1, 1, train_counts, design,
                                          settings, rng_train, v1 / 'train2017')
        val_images, val_anns = _split('val', num_val, num_train + 1, len(train_anns) + 1,
                                      val_counts, design, settings, rng_val, v1 / 'val2017')
        categories = _categories(design, train_anns)
        info = dict(description='synthetic long-tailed LVIS (pipeline.data.synthetic)', seed=seed,
                    settings=settings)
        for split, images, anns in (('train', train_images, train_anns),
                                    ('val', val_images, val_anns)):
            atomic.write_json(v1 / 'annotations' / f'lvis_v1_{split}.json',
                        dict(info=info, licenses=[], images=images, annotations=anns,
                             categories=categories))
            atomic.write_json(v05 / 'annotations' / f'lvis_v0.5_{split}.json',
                        dict(info=info, licenses=[], images=_as_v05(images, split),
                             annotations=anns, categories=categories))
            os.symlink(f'../lvis_v1/{split}2017', v05 / f'{split}2017')
        summary = dict(
            out_root=str(out_root), seed=seed, settings=settings,
            classes=[c['name'] for c in categories],
            frequency={g: sum(c['frequency'] == g for c in categories) for g in 'rcf'},
            train=dict(images=len(train_images), annotations=len(train_anns)),
            val=dict(images=len(val_images), annotations=len(val_anns)),
            wall_s=round(time.perf_counter() - start, 3))
        if min(summary['frequency'].values()) == 0:
            raise ValueError(f"settings {settings} gave frequency groups {summary['frequency']}: "
                             'all of r, c and f must be present; adjust rare_share or '
                             'num_categories')
        atomic.write_json(tmp_root / 'synthetic.json', summary)
        atomic.replace_dir(tmp_root, out_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return summary
