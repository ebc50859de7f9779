"""The prepared GPU check, checked here without a GPU: the device call it documents, the kit it
carries (sizes, checksums, pins, dependency closure over the GPU image's packages, a clean
CPython 3.12 install through the script's own install step), what its Python imports, and a CPU
dry run of its entry point, where CPU-vs-CPU comparisons must be exactly equal."""
import ast
import email
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts/gpu_check.sh'
WHEELS_SCRIPT = ROOT / 'scripts/gpu_check_wheels.sh'
README = ROOT / 'benchmarks/README.md'
DEFAULT_KIT = ROOT / 'work/gpu_check'
MIB = 2**20
# The GPU machine: CPython 3.12 on Linux x86-64 (glibc 2.39: Ubuntu 24.04's Python 3.12.3).
TARGET = dict(default_environment(), python_version='3.12', python_full_version='3.12.3',
              implementation_name='cpython', platform_python_implementation='CPython',
              sys_platform='linux', platform_system='Linux', platform_machine='x86_64',
              os_name='posix', extra='')
TARGET_GLIBC = (2, 39)
# Installed there under another name than their dependents ask for.
PROVIDED_AS = {'opencv-python': 'opencv-python-headless'}
# Import names whose distribution is named otherwise.
DISTRIBUTION_OF = {'cv2': 'opencv-python-headless', 'yaml': 'pyyaml', 'PIL': 'pillow',
                   'pkg_resources': 'setuptools', 'dateutil': 'python-dateutil',
                   'sklearn': 'scikit-learn', 'skimage': 'scikit-image'}
FIRST_PARTY = {'loce', 'pipeline', 'bench_loce_iteration', 'gpu_check'}
BUILT_THERE = {'mmcv'}  # from the carried sdist, by scripts/gpu_check.sh


def find_python312():
    candidates = [os.environ.get('PY312'), shutil.which('python3.12'),
                  *sorted(glob.glob('/root/.pyenv/versions/3.12.*/bin/python3.12')),
                  '/usr/bin/python3.12']
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run([candidate, '-c', 'import sys; print(sys.version_info[:2])'],
                                 capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == '(3, 12)':
            return candidate
    return None


def script_pins():
    """The CARRIED array of scripts/gpu_check_wheels.sh, plus its MMCV pin."""
    text = WHEELS_SCRIPT.read_text()
    block = re.search(r'^CARRIED=\((.*?)^\)', text, re.S | re.M).group(1)
    pins = [line.split('#')[0].strip() for line in block.splitlines()]
    return [p for p in pins if p] + [re.search(r'^MMCV=(\S+)', text, re.M).group(1)]


def kit_is_current(kit):
    if not (kit / 'SHA256SUMS').is_file() or not (kit / 'carried.txt').is_file():
        return False
    return (kit / 'carried.txt').read_text().split() == script_pins()


@pytest.fixture(scope='module')
def kit(tmp_path_factory):
    """work/gpu_check/ when it is current, else a fresh kit (downloads from PyPI; without the
    Python headers where there is no python3.12)."""
    if kit_is_current(DEFAULT_KIT):
        return DEFAULT_KIT
    path = tmp_path_factory.mktemp('kit') / 'gpu_check'
    python = find_python312()
    env = dict(PY312=python) if python else dict(GPU_CHECK_NO_HEADERS='1')
    subprocess.run(['bash', str(WHEELS_SCRIPT)], check=True, timeout=900,
                   env=dict(os.environ, GPU_CHECK_KIT=str(path), **env))
    return path


def wheel_metadata(path):
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))
        return email.message_from_bytes(zf.read(name))


def kit_versions(kit):
    versions = {}
    for wheel in (kit / 'wheels').glob('*.whl'):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        assert name not in versions, f'{name}: two versions in the kit'
        versions[name] = version
    for sdist in (kit / 'src').glob('*.tar.gz'):
        name, version = sdist.name[:-len('.tar.gz')].rsplit('-', 1)
        versions[canonicalize_name(name)] = Version(version)
    return versions


def image_packages(kit):
    """The GPU image's packages (name -> version or None), as the kit records them."""
    packages = {}
    for line in (kit / 'image.txt').read_text().split():
        name, _, version = line.partition('==')
        packages[canonicalize_name(name)] = Version(version) if version else None
    return packages


def documented_call():
    """The device run call of benchmarks/README.md's "GPU check" section (a JSON block)."""
    text = README.read_text()
    section = text[text.index('## GPU check'):]
    block = re.search(r'```json\n(.*?)```', section, re.S).group(1)
    return json.loads(block)


def test_documented_call_fits_the_device_limits():
    call = documented_call()
    assert set(call) == {'command', 'carry', 'timeout_s'}
    assert len(call['command']) <= 2000
    assert 'scripts/gpu_check.sh' in call['command']
    assert len(call['carry']) <= 8 and all(len(p) <= 200 for p in call['carry'])
    assert 'work/gpu_check' in call['carry']
    assert 1 <= call['timeout_s'] <= 600
    budget = int(re.search(r'GPU_CHECK_BUDGET_S:-(\d+)', SCRIPT.read_text()).group(1))
    assert budget + 20 <= call['timeout_s'], 'the script must stop before the call is killed'
    for script in (SCRIPT, WHEELS_SCRIPT):
        subprocess.run(['bash', '-n', str(script)], check=True)


def test_kit_and_working_tree_fit_in_64_mib(kit):
    kit_bytes = sum(p.stat().st_size for p in kit.rglob('*') if p.is_file())
    listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split('\0')
    tree_bytes = sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())
    assert kit_bytes <= 32 * MIB, f'kit is {kit_bytes / MIB:.1f} MiB'
    assert kit_bytes + tree_bytes <= 64 * MIB, \
        f'kit {kit_bytes / MIB:.1f} MiB + working tree {tree_bytes / MIB:.1f} MiB > 64 MiB'


def test_kit_checksums_pins_and_platform(kit):
    lines = (kit / 'SHA256SUMS').read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
        assert hashlib.sha256((kit / name).read_bytes()).hexdigest() == digest, name
    on_disk = {str(p.relative_to(kit)) for p in kit.rglob('*') if p.is_file()} - {'SHA256SUMS'}
    assert set(listed) == on_disk
    versions = kit_versions(kit)
    pins = {canonicalize_name(p.split('==')[0]): Version(p.split('==')[1]) for p in script_pins()}
    assert versions == pins
    headers = kit / 'python3.12-include.tar.gz'
    assert headers.is_file() or (kit != DEFAULT_KIT and find_python312() is None)
    for wheel in (kit / 'wheels').glob('*.whl'):
        _, _, _, tags = parse_wheel_filename(wheel.name)
        assert any(fits_target(tag) for tag in tags), f'{wheel.name}: not for cp312 x86-64'


def fits_target(tag):
    if tag.interpreter not in ('py3', 'py2', 'cp312') and not (
            tag.abi == 'abi3' and tag.interpreter.startswith('cp3')
            and int(tag.interpreter[3:]) <= 12):
        return False
    if tag.abi not in ('none', 'abi3', 'cp312'):
        return False
    if tag.platform == 'any':
        return True
    legacy = {'manylinux1_x86_64': (2, 5), 'manylinux2010_x86_64': (2, 12),
              'manylinux2014_x86_64': (2, 17)}
    if tag.platform in legacy:
        return legacy[tag.platform] <= TARGET_GLIBC
    match = re.fullmatch(r'manylinux_(\d+)_(\d+)_x86_64', tag.platform)
    return bool(match) and (int(match[1]), int(match[2])) <= TARGET_GLIBC


def test_kit_pins_are_the_projects(kit):
    """pyproject.toml's pins, and its ranges, hold for the kit (and setuptools < 81)."""
    import tomllib

    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    versions = kit_versions(kit)
    constraints = [line for line in (ROOT / 'scripts/constraints.txt').read_text().splitlines()
                   if line.strip() and not line.startswith('#')]
    checked = 0
    for req in map(Requirement, project['dependencies'] + constraints):
        name = canonicalize_name(req.name)
        if name in versions:
            assert versions[name] in req.specifier, f'kit: {name} {versions[name]}, project: {req}'
            checked += 1
    assert checked >= 6  # mmcv, mmengine, mmdet, pycocotools, faster-coco-eval, lvis, setuptools


def test_kit_resolves_over_the_image(kit):
    """Every requirement of every carried wheel (and of mmcv) is met on the GPU machine: by a
    carried wheel, or by a package of its image, at a version that fits when the version is
    known. pip cannot check this offline: the image's packages are not here."""
    versions = kit_versions(kit)
    image = image_packages(kit)
    requirements = []
    for wheel in (kit / 'wheels').glob('*.whl'):
        needs = wheel_metadata(wheel).get_all('Requires-Dist') or []
        requirements += [(wheel.name, line) for line in needs]
    sdist = next((kit / 'src').glob('mmcv-*.tar.gz'))
    import tarfile
    with tarfile.open(sdist) as tf:
        runtime = tf.extractfile(f'{sdist.name[:-7]}/requirements/runtime.txt').read().decode()
    requirements += [(sdist.name, line) for line in runtime.splitlines() if line.strip()]
    unmet = []
    for owner, line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        name = canonicalize_name(PROVIDED_AS.get(canonicalize_name(req.name), req.name))
        version = versions.get(name, image.get(name, 'missing'))
        if version == 'missing' or (version is not None and version not in req.specifier):
            unmet.append(f'{owner}: {line} (have {version})')
    assert not unmet, 'add these to CARRIED in scripts/gpu_check_wheels.sh:\n' + '\n'.join(unmet)


def first_party_file(module):
    parts = module.split('.')
    base = ROOT / 'benchmarks' if parts[0] in ('bench_loce_iteration', 'gpu_check') else ROOT
    for candidate in (base.joinpath(*parts).with_suffix('.py'),
                      base.joinpath(*parts, '__init__.py')):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path, module):
    """Absolute module names imported anywhere in one file (function-level imports too)."""
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                prefix = '.'.join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names.append(prefix)
            names += [f'{prefix}.{alias.name}' for alias in node.names]
    return names


def test_what_the_check_imports_is_there(kit):
    """Follow the entry point's first-party imports (and `loce`, which its configs import):
    every third-party top-level module must be carried, built there (mmcv) or in the image."""
    available = set(kit_versions(kit)) | set(image_packages(kit))
    todo = ['gpu_check', 'bench_loce_iteration', 'loce']
    seen, missing = set(), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = first_party_file(module)
        if path is None:
            continue
        for name in imported_modules(path, module):
            top = name.split('.')[0]
            if top in FIRST_PARTY:  # the module and the packages above it
                parts = name.split('.')
                todo += ['.'.join(parts[:k]) for k in range(1, len(parts) + 1)]
            elif top in sys.stdlib_module_names or top in BUILT_THERE or top == '__future__':
                continue
            elif canonicalize_name(DISTRIBUTION_OF.get(top, top)) not in available:
                missing.add(f'{top} (imported by {path.relative_to(ROOT)})')
    assert not missing, ('not on the GPU machine; carry a wheel (scripts/gpu_check_wheels.sh) '
                         'or, if its image has it, list it in IMAGE: ' + ', '.join(sorted(missing)))


def test_kit_installs_into_a_clean_python312_target(kit, tmp_path):
    """The script's own install step, with CPython 3.12 and an empty target; then what imports
    without the image's packages (numpy, attrs, torch) does, from that target alone."""
    python = find_python312()
    if python is None:
        pytest.skip('no python3.12 here (set PY312)')
    state = tmp_path / 'state'
    out = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, GPU_CHECK_PYTHON=python, GPU_CHECK_STEPS='install',
                                  GPU_CHECK_KIT=str(kit), GPU_CHECK_STATE=str(state),
                                  OUT=str(tmp_path / 'out')))
    assert out.returncode == 0, out.stderr + out.stdout
    site = state / 'site'
    installed = {canonicalize_name(p.name.split('-')[0]) for p in site.glob('*.dist-info')}
    assert installed == set(kit_versions(kit)) - {'mmcv'}
    assert (state / 'mmcv-2.1.0/setup.py').is_file()
    probe = ('import addict, platformdirs, pkg_resources, rpds, '
             'setuptools, termcolor, terminaltables, yapf; print(setuptools.__version__)')
    code = f'import sys; sys.path[:0] = [{str(site)!r}]; {probe}'
    run = subprocess.run([python, '-I', '-c', code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(kit_versions(kit)['setuptools'])
    again = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, GPU_CHECK_PYTHON=python, GPU_CHECK_STEPS='install',
                                    GPU_CHECK_KIT=str(kit), GPU_CHECK_STATE=str(state),
                                    OUT=str(tmp_path / 'out')))
    assert again.returncode == 0 and 'already installed' in again.stderr


def run_script(tmp_path, **env):
    out = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, GPU_CHECK_STATE=str(tmp_path / 'state'),
                                  OUT=str(tmp_path / 'out'), **env))
    summary = json.loads((tmp_path / 'out/gpu_check.json').read_text())
    assert json.loads(out.stdout) == summary, 'the summary printed is the one written to $OUT'
    return out.returncode, summary


def test_script_reports_a_missing_kit_as_json(tmp_path):
    rc, summary = run_script(tmp_path, GPU_CHECK_KIT=str(tmp_path / 'nothing'))
    assert rc == 1
    assert summary['status'] == 'failed' and summary['stage'] == 'install'
    assert 'gpu_check_wheels.sh' in summary['message']


def test_script_needs_a_gpu_or_an_arch_to_build(tmp_path):
    rc, summary = run_script(tmp_path, GPU_CHECK_STEPS='build', GPU_CHECK_PYTHON=sys.executable,
                             CUDA_VISIBLE_DEVICES='')
    assert rc == 1
    assert summary['stage'] == 'build' and 'GPU_CHECK_ARCH' in summary['message']
    assert any('sees no GPU' in line for line in summary['log_tail'])


@pytest.mark.timeout(900)
def test_cpu_dry_run_of_the_entry_point(tmp_path):
    """The entry point the script runs, on CPU at tiny size: its summary, and CPU-vs-CPU
    comparisons exactly equal."""
    work = ROOT / 'work' / f'pytest-gpu-check-{os.getpid()}'
    out_file = tmp_path / 'summary.json'
    try:
        run = subprocess.run(
            [sys.executable, str(ROOT / 'benchmarks/gpu_check.py'), '--device', 'cpu', '--tiny',
             '--threads', '1', '--work-dir', str(work), '--out', str(out_file)],
            capture_output=True, text=True, timeout=900, cwd=ROOT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads(run.stdout)
    assert summary == json.loads(out_file.read_text())
    assert set(summary) == {'status', 'scale', 'checks', 'environment', 'build', 'ops',
                            'iteration', 'mfs_memory', 'evaluation', 'wall_s'}
    assert summary['status'] == 'ok' and summary['scale'] == 'tiny'
    assert all(summary['checks'].values()), summary['checks']
    assert summary['environment']['device'] == 'cpu'

    for thr, nms in summary['ops']['nms'].items():
        assert nms['equal'] and nms['kept_cpu'] == nms['kept_device'] > 0, thr
    roi = summary['ops']['roi_align']
    assert roi['forward_equal'] and roi['backward_equal']
    assert roi['forward_max_abs_diff'] == 0.0 and roi['backward_max_abs_diff'] == 0.0

    it = summary['iteration']
    assert list(it['variants']) == ['plain', 'LOCE', 'LOCE-device-fp16']
    assert it['image_size'] == 128 and it['classes'] == 16
    for name, variant in it['variants'].items():
        assert variant['iterations'] == 2 and variant['it_per_s'] > 0, name
        assert variant['peak_gib'] is None  # no device memory on CPU
    rows = it['sampled_classes'] * it['features_per_class']
    assert it['variants']['plain']['memory_rows_per_iteration'] is None
    assert it['variants']['LOCE']['memory_rows_per_iteration'] == rows
    assert set(it['loce_time_over_plain']) == {'LOCE', 'LOCE-device-fp16'}

    mfs = summary['mfs_memory']
    assert (mfs['config']['device'], mfs['config']['dtype']) == ('cpu', 'float32')
    assert (mfs['device_float16']['device'], mfs['device_float16']['dtype']) == ('cpu', 'float16')
    for memory in (mfs['config'], mfs['device_float16']):
        assert memory['bytes'] == memory['formula_bytes'] > 0
    assert 1.9 < mfs['config_over_device_float16'] < 2.0

    ev = summary['evaluation']
    assert ev['metric'] == 'FastLVISMetric' and ev['images'] == 16 and ev['device'] == 'cpu'
    assert {'lvis/bbox_AP', 'lvis/segm_AP', 'lvis/bbox_APr'} <= set(ev['metrics'])
