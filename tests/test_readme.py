"The README's two commands are real: CI runs the same test command, and the main job runs."
import re, subprocess
from conftest import ROOT, run_noisekd

def _block(name):
    txt = (ROOT/'README.md').read_text()
    m = re.search(rf'<!-- {name} -->\s*```\n(.*?)\n```\s*<!-- /{name} -->', txt, re.S)
    assert m, f'README has no {name} block'
    return m.group(1).strip()

def test_ci_runs_the_readme_test_command():
    out = subprocess.run(['bash', '-c', f"sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md "
                                        "| grep -v '^<!--' | grep -v '^```'"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert out == _block('test-command')
    assert 'bash -c' in (ROOT/'.ci'/'run').read_text()

def test_commands_install_from_scratch():
    for name in ('main-command', 'test-command'):
        cmd = _block(name)
        assert cmd.startswith('python3 -m venv .venv && . .venv/bin/activate && pip install -U pip && pip install -e ".[dev]"')
    assert _block('main-command').endswith('noisekd demo')
    assert _block('test-command').endswith('nbdev-test && pytest')
