"""Evaluation in several processes gives the numbers of one process, to the bit, and works
where users run it: inside an mmengine Runner test loop on CPU (torch threads started,
dataloader workers alive), box and mask together."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.structures import InstanceData
from test_fast_lvis_metric import case  # noqa: F401 (the shared fixture)
from test_fast_lvis_metric import AR_KEYS, _data_samples, lvis_api

from loce.evaluation import AP_KEYS, FastLVISMetric, evaluate_lvis, fast_lvis_metric, load_lvis_gt
from loce.evaluation.fast_lvis_metric import MAX_DEFAULT_PROCESSES, default_processes
from mmdet.structures import DetDataSample


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_processes_give_identical_numbers(case, iou_type):
    _, path, dets, official = case
    gt = load_lvis_gt(str(path))
    one = evaluate_lvis(gt, dets[iou_type], iou_type, processes=1)
    for processes, max_cells in ((2, 2000), (3, 60), (2, 1)):
        assert evaluate_lvis(gt, dets[iou_type], iou_type, processes=processes,
                             max_cells=max_cells) == one
    for key in AP_KEYS + AR_KEYS:
        assert one[key] == pytest.approx(official[iou_type][key], abs=1e-10), key


def test_default_is_one_process_per_usable_cpu_capped():
    usable = min(len(os.sched_getaffinity(0)), MAX_DEFAULT_PROCESSES)
    assert default_processes(10 ** 9) == usable
    assert default_processes(0) == 1  # small evaluations stay in this process
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match='processes must be a positive integer'):
            evaluate_lvis(None, [], 'bbox', processes=bad)
        with pytest.raises(ValueError, match='processes must be a positive integer'):
            FastLVISMetric(ann_file='never_read.json', processes=bad)


class _Replay(BaseModel):
    """Returns the prepared predictions of each image, after real torch work on several
    threads, so that the metric forks from a process whose thread pools are running."""

    def __init__(self, samples):
        super().__init__()
        self.samples = {s['img_id']: s['pred_instances'] for s in samples}
        self.weight = torch.nn.Parameter(torch.ones(64, 64))

    def forward(self, *args, **kwargs):
        raise NotImplementedError('test only')

    def test_step(self, data):
        torch.set_num_threads(2)
        (self.weight @ torch.randn(64, 4096)).sum().item()
        out = []
        for img_id in data['img_id']:
            sample = DetDataSample(metainfo=dict(img_id=img_id))
            sample.pred_instances = InstanceData(**self.samples[img_id])
            out.append(sample)
        return out


class _Images(torch.utils.data.Dataset):

    def __init__(self, img_ids):
        self.img_ids = img_ids

    def __len__(self):
        return len(self.img_ids)

    def __getitem__(self, index):
        return dict(img_id=self.img_ids[index])


def _runner_test(gt, path, dets, tmp_path, processes):
    cat_ids = [c['id'] for c in gt['categories']]
    samples = _data_samples(gt, dets, cat_ids, mask_scores=True)
    runner = Runner(
        model=_Replay(samples), work_dir=str(tmp_path / f'work{processes}'),
        test_dataloader=dict(dataset=_Images([s['img_id'] for s in samples]),
                             sampler=dict(type='DefaultSampler', shuffle=False),
                             collate_fn=dict(type='pseudo_collate'), batch_size=3,
                             num_workers=2, persistent_workers=True),
        test_cfg=dict(type='TestLoop'),
        test_evaluator=dict(type='FastLVISMetric', ann_file=str(path), metric=['bbox', 'segm'],
                            processes=processes, outfile_prefix=str(tmp_path / f'd{processes}')),
        default_scope='mmdet', log_level='WARNING')
    return runner.test()


def test_runner_test_loop_on_cpu(case, tmp_path):
    gt, path, dets, _ = case
    one = _runner_test(gt, path, dets['segm'], tmp_path, processes=1)
    two = _runner_test(gt, path, dets['segm'], tmp_path, processes=2)
    assert one == two
    assert set(one) == {f'lvis/{t}_{k}' for t in ('bbox', 'segm') for k in AP_KEYS}
    for iou_type in ('bbox', 'segm'):
        dumped = json.loads((tmp_path / f'd2.{iou_type}.json').read_text())
        official = lvis_api(path, dumped, iou_type)
        for key in AP_KEYS:
            assert two[f'lvis/{iou_type}_{key}'] == pytest.approx(official[key], abs=1e-10)


_evaluate_group = fast_lvis_metric._evaluate_group


def _dies_on_the_second_group(index):
    """A worker killed mid-task, as by the kernel's OOM killer (module level: tasks are sent
    to the workers by reference)."""
    if index == 1:
        os._exit(9)
    return _evaluate_group(index)


def test_a_worker_that_dies_is_an_error_not_a_hang(case, monkeypatch):
    _, path, dets, _ = case
    monkeypatch.setattr(fast_lvis_metric, '_evaluate_group', _dies_on_the_second_group)
    with pytest.raises(RuntimeError, match='an LVIS evaluation process died.*processes=1'):
        evaluate_lvis(load_lvis_gt(str(path)), dets['bbox'], 'bbox', processes=2, max_cells=60)


_SLOW_EVALUATION = '''
import json, os, sys, time
from loce.evaluation import evaluate_lvis, fast_lvis_metric, load_lvis_gt
real = fast_lvis_metric._evaluate_group


def slow(index):
    time.sleep(120)
    return real(index)


fast_lvis_metric._evaluate_group = slow
dets = json.load(open(sys.argv[2]))
print(os.getpid(), flush=True)
evaluate_lvis(load_lvis_gt(sys.argv[1]), dets, 'bbox', processes=2, max_cells=60)
'''


def _children(pid):
    with open(f'/proc/{pid}/task/{pid}/children') as f:
        return [int(p) for p in f.read().split()]


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def test_workers_die_with_a_killed_parent(case, tmp_path):
    """A SIGKILLed stage or test job leaves no evaluation worker behind."""
    _, path, dets, _ = case
    script, dets_path = tmp_path / 'slow.py', tmp_path / 'dets.json'
    script.write_text(_SLOW_EVALUATION)
    dets_path.write_text(json.dumps(dets['bbox']))
    parent = subprocess.Popen([sys.executable, str(script), str(path), str(dets_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert int(parent.stdout.readline()) == parent.pid
        deadline = time.monotonic() + 60
        while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) == 2
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers))
