"""FreezeRepresentationHook freezes exactly the representation, and under DistributedDataParallel
(wrapped before the hook runs, as mmengine does) training then works without
find_unused_parameters and leaves the frozen weights untouched on every rank."""
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loce.engine.freeze_hook import FreezeRepresentationHook, freeze_except


class Detector(nn.Module):
    """The parameter names of a Mask R-CNN, on a toy scale."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
        self.neck = nn.Linear(6, 6)
        self.rpn_head = nn.Linear(6, 2)
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = nn.Module()
        self.roi_head.bbox_head.shared_fcs = nn.Sequential(nn.Linear(6, 5))
        self.roi_head.bbox_head.fc_cls = nn.Linear(5, 3)
        self.roi_head.bbox_head.fc_reg = nn.Linear(5, 8)
        self.roi_head.mask_head = nn.Linear(6, 4)

    def forward(self, x):
        feats = self.neck(self.backbone(x))
        shared = self.roi_head.bbox_head.shared_fcs(feats)
        return (self.rpn_head(feats).sum() + self.roi_head.bbox_head.fc_cls(shared).sum()
                + self.roi_head.bbox_head.fc_reg(shared).pow(2).sum()
                + self.roi_head.mask_head(feats).pow(2).sum())


TRAINABLE = ('rpn_head.', 'roi_head.bbox_head.fc_cls.', 'roi_head.bbox_head.fc_reg.',
             'roi_head.mask_head.')


def test_only_rpn_classifier_regressor_and_mask_head_train():
    model = Detector()
    frozen = freeze_except(model)
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(TRAINABLE), name
    assert frozen == [model.backbone, model.neck, model.roi_head.bbox_head.shared_fcs]
    with pytest.raises(ValueError, match="'roi_head.mask_heads'"):
        freeze_except(Detector(), ('rpn_head', 'roi_head.mask_heads'))


def _train(runner, hook, rank, steps=3):
    params = list(runner.model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    for step in range(steps):
        hook.before_train_iter(runner, step)
        optimizer.zero_grad()
        runner.model(torch.randn(8, 4, generator=torch.Generator().manual_seed(rank))).backward()
        optimizer.step()


def _worker(rank, port, results):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    try:
        torch.manual_seed(0)
        module = Detector()
        start = {n: t.detach().clone() for n, t in module.state_dict().items()}
        runner = SimpleNamespace(model=DistributedDataParallel(module), cfg={},
                                 wrap_model=lambda cfg, model: DistributedDataParallel(model))
        hook = FreezeRepresentationHook()
        hook.before_run(runner)
        module.train()  # as the train loop does each epoch; the hook re-applies eval()
        _train(runner, hook, rank)
        end = module.state_dict()
        changed = {n for n in start if not torch.equal(start[n], end[n])}
        gathered = [torch.zeros_like(module.rpn_head.weight) for _ in range(2)]
        dist.all_gather(gathered, module.rpn_head.weight.detach())
        results[rank] = dict(changed=changed, wrapper=runner.model.module is module,
                             same_across_ranks=torch.equal(*gathered))

        # the failure the re-wrap avoids: freezing under an existing DDP
        stale = SimpleNamespace(model=DistributedDataParallel(Detector()), cfg={},
                                wrap_model=lambda cfg, model: model)
        freeze_except(stale.model.module)
        try:
            _train(stale, hook, rank, steps=2)
            results[f'stale{rank}'] = 'trained'
        except RuntimeError as err:
            results[f'stale{rank}'] = str(err)
    finally:
        dist.destroy_process_group()


def test_ddp_wrapped_before_freezing_trains_only_the_trainable_parameters(free_port):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port, results), nprocs=2)
    for rank in range(2):
        result = results[rank]
        assert result['wrapper'] and result['same_across_ranks']
        assert result['changed'] == {n for n in Detector().state_dict()
                                     if n.startswith(TRAINABLE)}  # frozen BN statistics too
        assert 'finished reduction' in results[f'stale{rank}']
