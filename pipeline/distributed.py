"""Multi-process training on machines without CUDA (gloo), through the same torchrun launch.

mmengine's `pytorch` launcher assumes GPUs: it calls torch.cuda.set_device(LOCAL_RANK) and
wraps the model in DistributedDataParallel with device_ids=[LOCAL_RANK], and both fail with a
CPU build of torch. Joining torchrun's process group with gloo first (mmengine then skips its
own initialisation) and wrapping without device ids lets the command Snakemake runs on GPUs run
unchanged on CPUs, which is how tests check the multi-process path (rank agreement of the LOCE
mean score, rank-0-only outputs). With CUDA nothing is changed.
"""
from __future__ import annotations


def prepare(cfg, launcher: str) -> None:
    """Adjust `cfg` (and the process group) for a CPU-only `pytorch` launch; else no-op."""
    import torch
    import torch.distributed as dist

    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        # env:// rendezvous: torchrun has set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
        dist.init_process_group(backend='gloo')
    cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False)))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
