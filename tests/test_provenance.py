"""Provenance: the dirty flag speaks of the code, not of the results the pipeline rewrites."""
import subprocess

from pipeline import provenance


def test_dirty_ignores_results_but_not_code(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(['git', *args], cwd=tmp_path, check=True, capture_output=True)
    git('init', '-q')
    (tmp_path / 'results').mkdir()
    (tmp_path / 'results' / 'm.json').write_text('{}')
    (tmp_path / 'code.py').write_text('x = 1\n')
    git('add', '.')
    git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'c')
    monkeypatch.setattr(provenance, 'ROOT', tmp_path)

    (tmp_path / 'results' / 'm.json').write_text('{"AP": 1}')
    commit, dirty = provenance.git_state()
    assert len(commit) == 40 and dirty is False
    (tmp_path / 'code.py').write_text('x = 2\n')
    assert provenance.git_state() == (commit, True)
