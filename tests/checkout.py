"""A copy of this checkout as a fresh clone would hold it: tracked and untracked-but-not-ignored
files (results/ included, the published copy runs are compared with), for tests that run the
pipeline or edit files where the real checkout must stay untouched."""
import shutil
import subprocess
from pathlib import Path

from pipeline import matrix as mx


def copy_checkout(dest: Path, results: bool = True) -> Path:
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=mx.ROOT,
                           capture_output=True, text=True, check=True).stdout.split('\0')
    for name in filter(None, files):
        src = mx.ROOT / name
        if src.is_file() and (results or not name.startswith('results/')):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest
