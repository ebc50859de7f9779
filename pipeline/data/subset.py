"""Deterministic N-image subsets of an LVIS annotation file (like detectron2's
`lvis_v0.5_val_rand_100`), for quick runs on real data.

Why not a plain random sample: a few hundred random LVIS images hold almost no rare classes, so
APr would be undefined. Up to half the budget therefore goes to covering categories, taking
rare, common and frequent in turn; the rest is a uniform random draw, so the subset still looks
like the source. Everything else is copied untouched: all categories stay in the category list
with LVIS's original `frequency`, `image_count` and `instance_count` (recomputing them on the
subset would move classes between r/c/f and change what APr means), and every kept image keeps
its `neg_category_ids` and `not_exhaustive_category_ids`. File names are unchanged, so the
subset JSON can sit next to the original and use the same image folders.
"""
import json
import random
import time
from pathlib import Path

from .. import atomic

GROUPS = ('r', 'c', 'f')


def _load(src_json):
    src_json = Path(src_json)
    try:
        data = json.loads(src_json.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f'{src_json}: no such LVIS annotation file; run '
                                '`python -m pipeline fetch` or `synthesize` first') from None
    except json.JSONDecodeError as err:
        raise ValueError(f'{src_json}: not valid JSON ({err}); re-download or regenerate '
                         'it') from None
    missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
    if missing:
        raise ValueError(f'{src_json}: missing top-level keys {missing}; not an LVIS file')
    unlabelled = [c['id'] for c in data['categories'] if c.get('frequency') not in GROUPS]
    if unlabelled:
        raise ValueError(f'{src_json}: categories {unlabelled[:5]} lack an r/c/f `frequency`; '
                         'subsets keep the source labels, so the source must have them')
    return data


def choose_images(data, *, num_images, seed):
    """Sorted ids of the chosen images (see the module docstring for the rule)."""
    rng = random.Random(seed)
    group_of = {c['id']: c['frequency'] for c in data['categories']}
    images_of, cats_of = {}, {}
    for a in data['annotations']:
        images_of.setdefault(a['category_id'], set()).add(a['image_id'])
        cats_of.setdefault(a['image_id'], set()).add(a['category_id'])
    queues = {}
    for g in GROUPS:
        queues[g] = sorted(c for c in images_of if group_of[c] == g)
        rng.shuffle(queues[g])
    chosen, covered = set(), set()
    budget = max(num_images // 2, min(num_images, len(GROUPS)))
    while len(chosen) < budget and any(queues.values()):
        for g in GROUPS:
            while queues[g] and queues[g][-1] in covered:
                queues[g].pop()
            if queues[g] and len(chosen) < budget:
                # an uncovered category has none of its images chosen yet
                image = rng.choice(sorted(images_of[queues[g].pop()]))
                chosen.add(image)
                covered |= cats_of[image]
    rest = sorted({img['id'] for img in data['images']} - chosen)
    chosen.update(rng.sample(rest, num_images - len(chosen)))
    return sorted(chosen)


def subset(src_json, dst_json, *, num_images, seed):
    """Write a num_images-image subset of src_json to dst_json (atomically) and return a
    summary: image/annotation counts and how many r/c/f categories have annotations in it."""
    start = time.perf_counter()
    data = _load(src_json)
    if not 1 <= num_images <= len(data['images']):
        raise ValueError(f'{src_json}: num_images={num_images} but the file has '
                         f"{len(data['images'])} images; choose 1..{len(data['images'])}")
    keep = set(choose_images(data, num_images=num_images, seed=seed))
    out = {k: v for k, v in data.items() if k not in ('images', 'annotations')}
    out['images'] = [img for img in data['images'] if img['id'] in keep]
    out['annotations'] = [a for a in data['annotations'] if a['image_id'] in keep]
    dst_json = Path(dst_json)
    atomic.write_text(dst_json, json.dumps(out))
    group_of = {c['id']: c['frequency'] for c in data['categories']}
    present = {a['category_id'] for a in out['annotations']}
    return dict(src=str(src_json), dst=str(dst_json), seed=seed, images=len(out['images']),
                annotations=len(out['annotations']),
                categories_present={g: sum(group_of[c] == g for c in present) for g in GROUPS},
                wall_s=round(time.perf_counter() - start, 3))
