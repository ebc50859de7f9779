"""Every full-profile run reads its data from the matrix's root, whatever its config names."""
import pytest
from mmengine.config import Config

from pipeline import matrix as mx
from pipeline.runconfig import relocate_data


def _values(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _values(v, key)


@pytest.mark.parametrize('run', list(mx.runs(mx.load())))
def test_relocation_points_datasets_and_evaluators_at_the_matrix_root(run):
    matrix = mx.load()
    spec = mx.run_spec(matrix, run)
    cfg = Config.fromfile(mx.config_path(matrix, 'full', spec['config']))
    root = str(mx.data_root(matrix, 'full', spec['dataset'])) + '/'
    relocate_data(cfg, mx.data_root(matrix, 'full', spec['dataset']))
    roots = list(_values(cfg.to_dict(), 'data_root'))
    assert roots and all(r == root for r in roots), roots
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.ann_file.startswith(root)
        assert evaluator.ann_file.endswith(f'{spec["dataset"]}_val.json')


def test_a_config_without_data_root_is_refused(tmp_path):
    path = tmp_path / 'bare.py'
    path.write_text("train_dataloader = dict(dataset=dict(ann_file='x.json'))\n")
    with pytest.raises(SystemExit, match='no top-level data_root'):
        relocate_data(Config.fromfile(path), tmp_path)
