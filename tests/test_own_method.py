"""The README's "Add your own method" path, followed to the letter in a copy of the checkout: a
registered loss in a module of its own, a config inheriting the stage-1 base (the smoke scale
shrinks it as it shrinks every config), one matrix entry naming its table and row label. Nothing else is edited; the next run
shows the method as a row of Table 5 beside LOCE and the baselines."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checkout import copy_checkout

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}')
pytestmark = pytest.mark.slow

LOSS = '''
"""A toy method: softmax cross-entropy with label smoothing, registered for MMDetection."""
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class ToySmoothedCELoss(nn.Module):
    def __init__(self, smoothing=0.1, loss_weight=1.0):
        super().__init__()
        self.smoothing, self.loss_weight = smoothing, loss_weight

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None,
                **kwargs):
        loss = F.cross_entropy(cls_score, label, reduction='none',
                               label_smoothing=self.smoothing)
        return self.loss_weight * weight_reduce_loss(
            loss, weight=None if weight is None else weight.float(),
            reduction=reduction_override or 'mean', avg_factor=avg_factor)
'''
CONFIG = '''
# My method: the stage-1 recipe with a label-smoothed softmax CE.
_base_ = './mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py'
custom_imports = dict(imports=['loce', 'toy_method'], allow_failed_imports=False)
model = dict(roi_head=dict(bbox_head=dict(
    loss_cls=dict(_delete_=True, type='ToySmoothedCELoss', smoothing=0.1))))
'''
ENTRY = '''
  toy_r50_v1:
    config: toy_mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1
    dataset: lvis_v1
    tables: [table5/r50_v1/toy]
    label: "Toy smoothed CE (yours)"
    options: {"+train_dataloader.dataset.indices": 16}  # a short run here: 8 iterations
'''


def test_a_method_of_yours_becomes_a_table5_row(tmp_path):
    repo = copy_checkout(tmp_path / 'repo')
    (repo / 'toy_method.py').write_text(textwrap.dedent(LOSS))
    (repo / 'configs' / 'toy_mask-rcnn_r50_fpn_normed-mask_random-ms-2x_lvis-v1.py').write_text(CONFIG)
    matrix = repo / 'pipeline' / 'experiments.yaml'
    text = matrix.read_text()
    matrix.write_text(text.replace('\nfinetune:\n', ENTRY + '\nfinetune:\n', 1))

    done = subprocess.run(['snakemake', '--cores', '2', '--config', 'scale=smoke',
                           'runs=[toy_r50_v1]'], cwd=repo, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (repo / 'work' / 'smoke' / 'results' / 'tables' / 'table5.md').read_text()
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    mine = [i for i, line in enumerate(rows) if 'Toy smoothed CE (yours)' in line]
    assert len(mine) == 1, table
    reproduced = rows[mine[0] + 1]
    assert 'reproduced `toy_r50_v1` (n=1)' in reproduced and 'missing' not in reproduced
    assert any('LOCE (ours)' in line for line in rows)
    # in the LVIS v1 R50 block, where its cell put it
    assert 'LVIS v1.0' in rows[mine[0]] and 'R-50-FPN' in rows[mine[0]]
