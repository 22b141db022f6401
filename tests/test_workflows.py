"""The contributors' test workflow and CI: both run the README's test command and then the notebooks' tests on a CPU
unlike the usual ones (tools/cpu_matrix.sh ci-unlike). The workflow cannot run here, so its YAML is checked: parsed,
its jobs and steps as GitHub reads them, and with actionlint where it is installed."""
import re, shutil, subprocess, tomllib
import pytest, yaml
from conftest import ROOT

WF = ROOT/'.github'/'workflows'/'test.yaml'

def _workflow():
    wf = yaml.safe_load(WF.read_text())
    wf['on'] = wf.pop(True, wf.get('on'))   # YAML 1.1 reads the key `on` as True
    return wf

def _pythons():
    "The oldest and newest Python the package declares (requires-python and its classifiers)."
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    oldest = re.fullmatch(r'>=\s*(3\.\d+)', proj['requires-python']).group(1)
    listed = [c.rsplit('::', 1)[1].strip() for c in proj['classifiers'] if re.search(r'Python :: 3\.\d+$', c)]
    return oldest, sorted(listed, key=lambda v: int(v.split('.')[1]))

def test_workflow_runs_on_every_push_and_pull_request():
    on = _workflow()['on']
    assert 'push' in on and 'pull_request' in on

def test_workflow_tests_the_oldest_and_newest_python():
    oldest, listed = _pythons()
    assert listed[0] == oldest, (oldest, listed)
    (job,) = _workflow()['jobs'].values()
    assert job['strategy']['matrix']['python-version'] == [listed[0], listed[-1]]
    setup = [s for s in job['steps'] if str(s.get('uses', '')).startswith('actions/setup-python')]
    assert setup and setup[0]['with']['python-version'] == '${{ matrix.python-version }}'

def test_workflow_and_ci_run_the_readme_command_then_the_unlike_cpu():
    (job,) = _workflow()['jobs'].values()
    runs = [s['run'] for s in job['steps'] if 'run' in s]
    readme = "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md"
    ci = (ROOT/'.ci'/'run').read_text()
    for text in ('\n'.join(runs), ci):
        assert readme in text and 'NOTEBOOKS_ONLY=1' in text and 'tools/cpu_matrix.sh ci-unlike' in text
        assert text.index(readme) < text.index('tools/cpu_matrix.sh ci-unlike')   # the usual run first

def test_the_unlike_cpu_is_unlike_the_usual_ones():
    "ci-unlike sets every variable the matrix varies, to the value furthest from a current x86 server."
    out = subprocess.run(['bash', str(ROOT/'tools'/'cpu_matrix.sh'), '--list'], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith('ci-unlike'))
    for v in ('ATEN_CPU_CAPABILITY=default', 'ONEDNN_MAX_CPU_ISA=AVX2', 'OMP_NUM_THREADS=1', 'NOISEKD_CPU_BF16=0'):
        assert v in line, v
    r = subprocess.run(['bash', str(ROOT/'tools'/'cpu_matrix.sh'), 'no-such-cpu'], capture_output=True, text=True)
    assert r.returncode == 2 and "Unknown configuration 'no-such-cpu'" in r.stderr

@pytest.mark.skipif(not shutil.which('actionlint'), reason="actionlint is not installed (it checks the workflows' YAML beyond a parse)")
def test_actionlint():
    r = subprocess.run(['actionlint', *map(str, sorted(WF.parent.glob('*.yaml')))], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
