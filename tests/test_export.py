"The library and the notebooks agree: `nbdev-export` on a copy of the tree changes no module."
import shutil, subprocess, sys
from pathlib import Path
from conftest import ROOT

def test_nbdev_export_changes_nothing(tmp_path):
    for name in ('nbs', 'noisekd'): shutil.copytree(ROOT/name, tmp_path/name, symlinks=True, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    for name in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/name, tmp_path/name)
    exe = Path(sys.executable).parent/'nbdev-export'
    r = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    changed = [p.name for p in sorted((ROOT/'noisekd').glob('*.py')) if p.read_text() != (tmp_path/'noisekd'/p.name).read_text()]
    new = sorted({p.name for p in (tmp_path/'noisekd').glob('*.py')} - {p.name for p in (ROOT/'noisekd').glob('*.py')})
    assert not changed and not new, f"run nbdev-export: modules out of date with the notebooks: {changed + new}"
