"""The proxy scale's DAG, end to end on a shrunken copy (300 small images, a few iterations per
run, two seeds), through `make proxy`'s command: shared stage 1, the paired seed statistics,
the claim lines and the design criteria reach its REPORT.md, and Figure 4 and the mean-score
trajectories are drawn. Not the science (results/proxy/ is), only that the proxy keeps working."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from checkout import copy_checkout

BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f'{BIN}{os.pathsep}{os.environ["PATH"]}')
pytestmark = pytest.mark.slow  # minutes, not the science: CI runs it, make test-fast does not
SHRINK = '''
# shrunk by tests/test_proxy_dag.py: a few iterations per run
lengths = {24: dict(iters=4), 30: dict(iters=5), 6: dict(iters=3)}
warmup = dict(pretrain=2, finetune=1)
'''


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_the_proxy_dag_runs_and_reports_seed_statistics_and_claims(tmp_path):
    repo = copy_checkout(tmp_path / 'repo')
    (repo / 'configs/proxy/shrink.py').write_text(
        (repo / 'configs/proxy/shrink.py').read_text() + SHRINK)
    matrix = repo / 'pipeline' / 'experiments.yaml'
    text = matrix.read_text()
    proxy = text[text.index('  proxy:\n'):text.index('\ndatasets:')]
    shrunk = re.sub(r'synthetic: \{[^}]*\}', 'synthetic: {num_train: 300, num_val: 40, '
                    'image_size: 96, num_categories: 25, head_fraction: 0.4, tail_images: 2, '
                    'rare_share: 0.4, val_min_images: 2, max_objects: 4}', proxy)
    matrix.write_text(text.replace(proxy, shrunk.replace('seeds: [0, 1, 2]', 'seeds: [0, 1]')))
    _edit(repo / 'configs/loce_mask-rcnn_r50_fpn_normed-mask_ms-6e_lvis-v1.py',
          'images_per_class=5', 'images_per_class=1')

    done = subprocess.run([sys.executable, '-m', 'pipeline.forkserver', '--scale', 'proxy', '--',
                           'snakemake', '--cores', '2', '--config', 'scale=proxy'],
                          cwd=repo, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = repo / 'work' / 'proxy' / 'results'
    stage1 = sorted(p.name for p in (results / 'metrics' / 'r50_v1').iterdir())
    assert stage1 == ['seed0.json']                                    # shared stage 1
    assert sorted(p.name for p in (results / 'metrics' / 'loce_r50_v1').iterdir()) == \
        ['seed0.json', 'seed1.json']
    report = (results / 'REPORT.md').read_text()
    assert '## Design criteria (pre-registered, checked on the CE baseline)' in report
    assert '## Table 1 against seed noise (paired by seed)' in report
    assert '- LOCE raises mask APr over the CE baseline (30 epochs, end to end): **' in report
    assert '## Feature memory in float16' in report
    assert 'train seed 0 alone, and every fine-tune seed starts from it' in report
    table1 = (results / 'tables' / 'table1.md').read_text()
    assert 'reproduced `loce_r50_v1` (n=2)' in table1 and ' ± ' in table1
    assert '| missing |' not in table1
    trajectory = (results / 'figures' / 'indicator_trajectory.csv').read_text().splitlines()
    assert trajectory[0] == 'row,run,iteration,group,mean_score,n_seeds'
    assert any(line.startswith('loce,loce_r50_v1,0,r,') for line in trajectory)
    assert '| missing |' not in (results / 'tables' / 'table2.md').read_text()  # not run here
