"""The CPU pin (pipeline/determinism.py), as the libraries themselves report it: each stage
process of a CPU scale runs ATen's AVX2 kernels, MKL's CNR COMPATIBLE code path (MKL_VERBOSE
names the branch it honours) and no oneDNN primitive (ONEDNN_VERBOSE lists every one it runs),
and the provenance records that pin by name."""
import os
import subprocess
import sys

import pytest

from pipeline import determinism
from pipeline import matrix as mx

pytestmark = pytest.mark.skipif(determinism.pin_blocker() is not None,
                                reason=f'the pin cannot hold here: {determinism.pin_blocker()}')

# A stage process in miniature: the CLI's pin, then a convolution and a GEMM, then the record.
STAGE = '''
import json
from pipeline import determinism, matrix as mx
determinism.apply(mx.scale(mx.load(), 'smoke'), scale_name='smoke')
import torch
x = torch.randn(2, 64, 64, 64)  # large enough for torch to pick oneDNN where it is on
torch.nn.functional.conv2d(x, torch.randn(64, 64, 3, 3), padding=1)
torch.randn(64, 128) @ torch.randn(128, 64)
state = determinism.state()
print('STATE', json.dumps({k: state[k] for k in ('pin', 'isa_pinned', 'onednn_enabled',
                                                  'cpu_capability', 'threads')}))
'''


def _stage(extra_env):
    env = {k: v for k, v in os.environ.items()
           if k not in (*determinism.PIN_ENV, *determinism.THREAD_ENV, determinism.NO_PIN_ENV)}
    done = subprocess.run([sys.executable, '-c', STAGE], cwd=mx.ROOT, capture_output=True,
                          text=True, env=dict(env, MKL_VERBOSE='1', ONEDNN_VERBOSE='1',
                                              **extra_env), check=True)
    state = next(line for line in done.stdout.splitlines() if line.startswith('STATE '))
    return done.stdout, __import__('json').loads(state[len('STATE '):])


def test_a_pinned_stage_runs_mkl_compatible_no_onednn_avx2_one_thread_and_records_it():
    out, state = _stage({})
    mkl = [line for line in out.splitlines() if line.startswith('MKL_VERBOSE SGEMM')]
    assert mkl and all('CNR:COMPATIBLE' in line for line in mkl), mkl[:2]
    assert not [line for line in out.splitlines() if 'onednn_verbose' in line and ',exec,' in line]
    assert state == dict(pin=determinism.PIN, isa_pinned=True, onednn_enabled=False,
                         cpu_capability='AVX2', threads=1)


def test_without_the_pin_onednn_runs_the_convolution_and_mkl_picks_its_own_branch():
    """The control: the same process with the pin turned off does what the pin prevents."""
    out, state = _stage({determinism.NO_PIN_ENV: '1'})
    assert [line for line in out.splitlines() if 'onednn_verbose' in line and ',exec,' in line]
    assert not any('CNR:COMPATIBLE' in line for line in out.splitlines())
    assert state['pin'] is None and state['isa_pinned'] is False and state['onednn_enabled']


def test_the_pin_is_in_the_environment_of_every_cpu_scale_and_of_no_gpu_scale():
    matrix = mx.load()
    for name, spec in matrix['scales'].items():
        env = determinism.pinned_env(spec, scale_name=name)
        if spec['gpus'] == 0:
            assert env['MKL_CBWR'] == 'COMPATIBLE' and env['ATEN_CPU_CAPABILITY'] == 'avx2', name
            assert env['OMP_NUM_THREADS'] == str(spec['threads']), name
        else:
            assert not set(determinism.PIN_ENV) & set(env), name


@pytest.mark.parametrize('stage, imports_torch', [('aggregate', False), ('compare', False),
                                                  ('train', True)])
def test_only_the_stages_that_compute_import_torch_to_pin_it(stage, imports_torch):
    """The CLI's pin in a stage that only reads records sets the environment (its children
    inherit it) without paying torch's import; a training stage gets oneDNN turned off."""
    code = ('import sys; from pipeline import cli, determinism, matrix as mx; '
            f'determinism.apply(mx.scale(mx.load(), "smoke"), scale_name="smoke", '
            f'computes={stage!r} in cli.TORCH_STAGES); '
            'import os; print("torch" in sys.modules, '
            'determinism.PIN_ENV.items() <= os.environ.items())')
    env = {k: v for k, v in os.environ.items()
           if k not in (*determinism.PIN_ENV, *determinism.THREAD_ENV, determinism.NO_PIN_ENV)}
    done = subprocess.run([sys.executable, '-c', code], cwd=mx.ROOT, capture_output=True,
                          text=True, env=env, check=True)
    assert done.stdout.split() == [str(imports_torch), 'True']
