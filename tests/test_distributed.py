"""Two CPU processes (gloo) fine-tune the smoke LOCE run through the launch Snakemake uses on
GPUs (torchrun, mmengine's `pytorch` launcher): both ranks end with the same mean score, the
saved checkpoint holds it, and rank 0 alone writes the run's summary."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import matrix as mx
from pipeline import runconfig

ROOT = Path(__file__).resolve().parent.parent
RUN, PRETRAIN = 'loce_r50_v1', 'r50_v1'

# Runs `python -m pipeline ...` (the stage's own main) in each rank, and records what it cannot
# be asked afterwards: each rank's mean score at the end of training, and which rank wrote
# which JSON file.
RANK_PROBE = '''
import os, sys
from pathlib import Path
out, argv = Path(sys.argv[1]), sys.argv[2:]
sys.path.insert(0, os.getcwd())
from pipeline import determinism, matrix as mx
determinism.apply(mx.scale(mx.load(), 'smoke'))  # before torch, as the CLI does
import torch
from mmengine.runner import Runner
from pipeline import atomic
train, write_json = Runner.train, atomic.write_json

def probed_train(self):
    model = train(self)
    net = getattr(self.model, 'module', self.model)
    torch.save(dict(world_size=self.world_size, scores=net.roi_head.indicator.scores.clone()),
               out / f'rank{self.rank}.pt')
    return model

def probed_write_json(path, obj):
    with open(out / 'writes.log', 'a') as log:
        log.write(f"{os.environ['RANK']} {Path(path).name}\\n")
    return write_json(path, obj)

Runner.train, atomic.write_json = probed_train, probed_write_json
from pipeline.__main__ import main
sys.exit(main(argv))
'''


def _random_stage1_checkpoint(repo: Path) -> None:
    """Stage-1 weights only seed the fine-tuning; random ones keep this test to the fine-tuning
    (the smoke pretraining takes minutes on one core)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    matrix = mx.load()
    cfg = runconfig.at_scale(matrix, 'smoke', PRETRAIN)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    target = repo / mx.checkpoint('smoke', PRETRAIN, 0).relative_to(mx.ROOT)
    target.parent.mkdir(parents=True)
    torch.save(dict(state_dict=model.state_dict(), meta={}), target)
    # what the train stage records: the config the weights were trained under
    sha = runconfig.config_sha256(runconfig.resolve(matrix, 'smoke', PRETRAIN, 0))
    (target.parent / 'identity.json').write_text(json.dumps(dict(config_sha256=sha)))


@pytest.mark.slow
def test_two_cpu_processes_agree_on_the_mean_score_and_rank0_writes_once(tmp_path):
    repo, probe = tmp_path / 'repo', tmp_path / 'probe'
    for name in ('loce', 'configs', 'pipeline'):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns('__pycache__'))
    probe.mkdir()
    (tmp_path / 'rank_probe.py').write_text(RANK_PROBE)
    # No GPU even where there is one: this is the gloo path.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, '-m', 'pipeline', 'data', '--scale', 'smoke'], cwd=repo,
                   env=env, check=True, capture_output=True)
    _random_stage1_checkpoint(repo)

    launch = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
              '--nproc_per_node', '2', '--', str(tmp_path / 'rank_probe.py'), str(probe),
              '--threads', '1', 'train', '--scale', 'smoke', '--run', RUN, '--seed', '0',
              '--launcher', 'pytorch']
    done = subprocess.run(launch, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    ranks = [torch.load(probe / f'rank{r}.pt') for r in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    scores = ranks[0]['scores']
    assert torch.equal(scores, ranks[1]['scores'])
    assert (scores[:-1] != 0.01).any(), 'the mean score was never updated (initial value 0.01)'

    final = repo / mx.checkpoint('smoke', RUN, 0).relative_to(mx.ROOT)
    saved = torch.load(final, map_location='cpu', weights_only=False)['state_dict']
    assert torch.equal(saved['roi_head.indicator.scores'], scores)
    assert (probe / 'writes.log').read_text().splitlines() == [
        '0 identity.json', '0 indicator_trace.json', '0 train.json']
