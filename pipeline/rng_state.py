"""RNG states in checkpoints, so a resumed run draws the same augmentations and RoI samples.

mmengine restores weights, optimizer, schedulers and the sampler's epoch seed on resume, but
not the Python, NumPy and torch generators, which drive flips, scale choice and the RoI
samplers; without them a resumed run is a different run. The train stage adds this hook.
"""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = dict(python=random.getstate(), numpy=np.random.get_state(),
                                       torch=torch.get_rng_state(),
                                       cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if state is None or not runner._resume:
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if state['cuda'] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
