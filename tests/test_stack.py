"""The pinned stack is what is installed, and mmcv's compiled ops work on CPU."""
import pytest
import torch


def test_versions_are_the_pinned_ones():
    import mmcv
    import mmdet
    import mmengine

    assert torch.__version__.startswith('2.13.')
    assert mmcv.__version__ == '2.1.0'
    assert mmengine.__version__ == '0.10.7'
    assert mmdet.__version__ == '3.3.0'


def test_compiled_nms_keeps_the_non_overlapping_boxes():
    from mmcv.ops import nms

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)  # IoU(0, 1) = 81 / 119 = 0.68
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))


def test_compiled_roi_align_interpolates_a_linear_map_exactly():
    from mmcv.ops import RoIAlign

    height, width, out = 16, 32, 4
    feature = torch.arange(width, dtype=torch.float32).expand(1, 1, height, width).contiguous()
    x1, x2 = 4.0, 20.0
    rois = torch.tensor([[0., x1, 2., x2, 10.]])
    pooled = RoIAlign((out, out), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feature, rois)
    # aligned=True samples at continuous coordinate x - 0.5; a linear map is interpolated exactly,
    # so every bin equals the value at its centre.
    centres = x1 + (torch.arange(out) + 0.5) * (x2 - x1) / out - 0.5
    assert torch.allclose(pooled[0, 0], centres.expand(out, out), atol=1e-5)


@pytest.mark.parametrize('module', ['loce.models', 'loce.engine', 'loce.evaluation'])
def test_importing_loce_registers_its_modules(module):
    import importlib

    importlib.import_module(module)


def test_the_wheel_is_the_plug_in_alone(tmp_path):
    """`pip install loce-repro` gives the plug-in (`loce`) and nothing of the workflow, which
    reads the matrix and configs beside it and so runs from a checkout."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root, src = Path(__file__).resolve().parents[1], tmp_path / 'src'
    src.mkdir()
    for name in ('pyproject.toml', 'README.md', 'loce', 'pipeline'):  # built away from the checkout
        (shutil.copytree if (root / name).is_dir() else shutil.copy2)(root / name, src / name)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                    '-w', str(tmp_path), str(src)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob('loce_repro-*.whl'))).namelist()
    packages = {n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')}
    assert packages == {'loce'}
    assert 'loce/models/equilibrium_loss.py' in names
