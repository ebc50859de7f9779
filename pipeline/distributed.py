"""Multi-process training under torchrun (mmengine's `pytorch` launcher), on GPUs and on CPUs.

The process group is joined before the Runner is built, so that the train stage can let rank 0
alone decide about the work dir (set a stale one aside) while the other ranks wait for it; mmengine
then finds the group initialised and skips its own set-up.

mmengine's `pytorch` launcher assumes GPUs: it calls torch.cuda.set_device(LOCAL_RANK) and wraps
the model in DistributedDataParallel with device_ids=[LOCAL_RANK], and both fail with a CPU build
of torch. Joining with gloo and wrapping without device ids lets the command Snakemake runs on
GPUs run unchanged on CPUs, which is how tests check the multi-process path (rank agreement of
the LOCE mean score, rank-0-only outputs). With CUDA the group is nccl, as mmengine would make it.
"""
from __future__ import annotations

import os


def barrier_if_launched(launcher: str) -> None:
    """Join torchrun's process group (env:// rendezvous) and wait for every rank."""
    if launcher != 'pytorch':
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
            dist.init_process_group(backend='nccl')
        else:
            dist.init_process_group(backend='gloo')
    dist.barrier()


def prepare(cfg, launcher: str) -> None:
    """Adjust `cfg` for a CPU-only `pytorch` launch (gloo, no device ids); else no-op."""
    import torch

    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False)))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
