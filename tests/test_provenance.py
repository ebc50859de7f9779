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


def _stage_tree(tmp_path, monkeypatch, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(provenance, 'ROOT', tmp_path)
    monkeypatch.setattr(provenance, 'STAGE_CODE', {'train': ('pkg', 'run.py')})


def test_code_moved_or_renamed_with_the_same_bytes_keeps_its_fingerprint(tmp_path, monkeypatch):
    _stage_tree(tmp_path, monkeypatch, {'pkg/loss.py': 'A = 1\n', 'run.py': 'B = 2\n'})
    before = provenance.code_sha256('train')
    (tmp_path / 'pkg' / 'losses').mkdir()
    (tmp_path / 'pkg' / 'loss.py').rename(tmp_path / 'pkg' / 'losses' / 'equalization.py')
    assert provenance.code_sha256('train') == before


def test_any_edit_of_a_fingerprinted_file_changes_the_fingerprint(tmp_path, monkeypatch):
    _stage_tree(tmp_path, monkeypatch, {'pkg/loss.py': 'A = 1\n', 'run.py': 'B = 2\n'})
    before = provenance.code_sha256('train')
    for name, text in (('pkg/loss.py', 'A = 2\n'), ('run.py', 'B = 2 \n')):
        path = tmp_path / name
        old = path.read_text()
        path.write_text(text)
        assert provenance.code_sha256('train') != before, name
        path.write_text(old)
    assert provenance.code_sha256('train') == before
    (tmp_path / 'pkg' / 'new.py').write_text('C = 3\n')  # a new file in a fingerprinted folder
    assert provenance.code_sha256('train') != before
