"""Stand-in ImageNet weights for `torchvision://resnet50` and `torchvision://resnet101`: random,
seeded values in torchvision's ResNet key layout, put where torch hub's cache holds the real
files, so the `full` configs' backbone initialisation runs mmengine's loading code offline, as
on a cluster (issue #23, substitution 2).

How mmengine resolves the name: `load_from_torchvision` looks it up in `get_torchvision_models()`
(for torchvision >= 0.13: mmengine/hub/torchvision_0.12.json, e.g. resnet50 ->
https://download.pytorch.org/models/resnet50-0676ba61.pth) and `load_url` (torch.hub's
load_state_dict_from_url) loads $TORCH_HOME/hub/checkpoints/<the URL's file name> if it exists,
downloading only if it does not. The file names are read from mmengine's table, not copied.

The layout is torchvision's ResNet (Bottleneck, blocks 3-4-6-3 or 3-4-23-3), including the 1000-
class `fc` that mmdet's ResNet has no use for (mmengine reports it as unexpected, as with the real
file) and without BatchNorm's num_batches_tracked, which the ImageNet files predate. Values are
scaled like a trained network's (He-normal convolutions, BatchNorm near identity but for each
residual branch's last one, at 0.2), so the stand-in backbone's outputs keep a standard deviation
of about 2 at every stage, as a trained one's, rather than growing to about 300 at C5 (which gave
a classification loss of 140 and no detection above the score threshold).

`torchvision` itself: mmengine imports it to build that table. The CPU environment of this
project has none (PyPI's torchvision does not import beside the CPU torch), so
`write_torchvision_standin` writes a package exposing only `__version__` and an empty `models`:
put its folder on PYTHONPATH of the processes that load the weights, and only where
`import torchvision` fails.
"""
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EXPANSION = 4
TORCHVISION_STANDIN_VERSION = '0.13.0+standin'  # >= 0.13: mmengine takes its JSON table


def hub_file_name(depth):
    """The cache file name mmengine's `torchvision://resnet<depth>` resolves to."""
    import mmengine
    table = json.loads((Path(mmengine.__file__).parent / 'hub' / 'torchvision_0.12.json')
                       .read_text())
    return os.path.basename(urlparse(table[f'resnet{depth}']).path)


def layout(depth):
    """{key: shape} of torchvision's resnet<depth>() state dict, less num_batches_tracked."""
    shapes = {'conv1.weight': (64, 3, 7, 7), **_bn('bn1', 64)}
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip(BLOCKS[depth], (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f'layer{stage}.{b}'
            shapes[f'{p}.conv1.weight'] = (planes, inplanes, 1, 1)
            shapes |= _bn(f'{p}.bn1', planes)
            shapes[f'{p}.conv2.weight'] = (planes, planes, 3, 3)
            shapes |= _bn(f'{p}.bn2', planes)
            shapes[f'{p}.conv3.weight'] = (planes * EXPANSION, planes, 1, 1)
            shapes |= _bn(f'{p}.bn3', planes * EXPANSION)
            if b == 0:
                shapes[f'{p}.downsample.0.weight'] = (planes * EXPANSION, inplanes, 1, 1)
                shapes |= _bn(f'{p}.downsample.1', planes * EXPANSION)
            inplanes = planes * EXPANSION
    shapes['fc.weight'] = (1000, 512 * EXPANSION)
    shapes['fc.bias'] = (1000,)
    return shapes


def _bn(prefix, channels):
    return {f'{prefix}.{k}': (channels,) for k in ('weight', 'bias', 'running_mean',
                                                   'running_var')}


def state_dict(depth, seed=0):
    """Random float32 weights in `layout(depth)`, from one seeded CPU generator in key order."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout(depth).items():
        values = torch.randn(shape, generator=gen)
        if key.endswith('running_var'):
            out[key] = 1 + 0.1 * values.abs()
        elif key.endswith(('running_mean', 'bias')):
            out[key] = 0.05 * values
        elif key.endswith('bn3.weight'):  # a residual branch's last BatchNorm: small, as
            out[key] = 0.2 * (1 + 0.05 * values)  # in trained ResNets (else std grows ~100x)
        elif len(shape) == 1:  # BatchNorm weight
            out[key] = 1 + 0.05 * values
        else:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            out[key] = values * (2 / fan_in) ** 0.5
    return out


def write(torch_home, depths=(50, 101), seed=0):
    """Write the stand-ins into torch_home/hub/checkpoints/ (atomically) and return
    {depth: path}. Set TORCH_HOME=torch_home where the weights are loaded."""
    import torch
    folder = Path(torch_home) / 'hub' / 'checkpoints'
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for depth in depths:
        path = folder / hub_file_name(depth)
        tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
        torch.save(state_dict(depth, seed), tmp)
        os.replace(tmp, path)
        paths[depth] = path
    return paths


def write_torchvision_standin(folder):
    """Write folder/torchvision/: the version and empty `models` module mmengine's
    get_torchvision_models() reads. Returns the folder to put on PYTHONPATH."""
    package = Path(folder) / 'torchvision'
    (package / 'models').mkdir(parents=True, exist_ok=True)
    (package / '__init__.py').write_text(
        '"""Stand-in for torchvision where it cannot be installed (pipeline/data/hub_standin.py):\n'
        'only what mmengine needs to resolve torchvision:// names from its own URL table."""\n'
        f'from . import models\n\n__version__ = {TORCHVISION_STANDIN_VERSION!r}\n')
    (package / 'models' / '__init__.py').write_text(
        '"""No models and no weights enums: mmengine then uses its torchvision_0.12.json."""\n')
    return Path(folder)


def activate(folder):
    """Point this process and its children at the stand-ins under folder (written by
    `prepare`): TORCH_HOME for the weights, and the torchvision stand-in on the import path
    only where torchvision itself does not import."""
    folder = Path(folder)
    os.environ['TORCH_HOME'] = str(folder / 'torch_home')
    try:
        import torchvision  # noqa: F401
    except ImportError:
        path = str(folder / 'python')
        sys.path.insert(0, path)
        os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [path, os.environ.get('PYTHONPATH')]))


def prepare(folder, seed=0):
    """Write both stand-ins under folder: torch_home/hub/checkpoints/ and python/torchvision/."""
    write(Path(folder) / 'torch_home', seed=seed)
    write_torchvision_standin(Path(folder) / 'python')
