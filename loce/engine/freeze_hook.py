"""Freezing of the representation for LOCE's fine-tuning stage (the authors' `selectp=1`).

Only the RPN head, the bbox classifier and regressor (fc_cls, fc_reg) and the mask head train;
the backbone, the neck and the bbox head's shared FCs are frozen (requires_grad False, and kept
in eval mode so BatchNorm statistics stay those of stage 1). Frozen features are what lets MFS
reuse stored RoI features across iterations.

Why a hook that freezes in `before_run` and re-wraps a DistributedDataParallel model: mmengine
wraps the model in Runner.__init__, before any hook runs, and DDP fixes the set of parameters it
reduces at construction. Freezing after that makes DDP wait for gradients that never come
("Expected to have finished reduction ...") unless find_unused_parameters=True, which then
traverses the graph and all-reduces the frozen parameters' buckets every iteration. Re-wrapping
after freezing (with the runner's own `wrap_model`, so model_wrapper_cfg is honoured) gives a DDP
that reduces only the trainable parameters, and the fine-tune configs need no
find_unused_parameters. `before_run` precedes weight init, checkpoint loading and the first
iteration. The optimizer is built just before and holds every parameter; frozen ones never get
a gradient, so SGD (momentum and weight decay included) leaves them unchanged.
"""
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.parallel import DistributedDataParallel

TRAINABLE = ('rpn_head', 'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
             'roi_head.mask_head')


def freeze_except(model, trainable=TRAINABLE):
    """Set requires_grad False on every parameter outside the `trainable` name prefixes and
    return the frozen modules (topmost submodules with parameters, none of them trainable)."""
    used = set()
    for name, param in model.named_parameters():
        prefixes = [p for p in trainable if name == p or name.startswith(p + '.')]
        used.update(prefixes)
        if not prefixes:
            param.requires_grad_(False)
    unused = [p for p in trainable if p not in used]
    if unused:
        raise ValueError(f'FreezeRepresentationHook: no parameter is named under {unused}; '
                         'fix `trainable` to name modules of this model')
    return frozen_modules(model)


def frozen_modules(module):
    """Topmost submodules that have parameters, none of which requires grad."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [module]
    return [m for child in module.children() for m in frozen_modules(child)]


@HOOKS.register_module()
class FreezeRepresentationHook(Hook):
    """Freeze all but `trainable` (parameter-name prefixes) before the run; keep the frozen
    modules in eval mode at every iteration (the train loop calls model.train() each epoch)."""

    priority = 'VERY_HIGH'

    def __init__(self, trainable=TRAINABLE):
        self.trainable = tuple(trainable)
        self._frozen = []

    def before_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._frozen = freeze_except(model, self.trainable)
        if is_model_wrapper(runner.model):
            if not isinstance(runner.model, DistributedDataParallel):
                raise TypeError(f'FreezeRepresentationHook supports DistributedDataParallel, '
                                f'not {type(runner.model).__name__}')
            runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for module in self._frozen:
            module.eval()
