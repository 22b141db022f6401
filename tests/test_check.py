"""`noisekd check` end to end on the CPU, as a user runs it on a new machine: every line ✓ and exit 0; a bad --device is
refused in one line before any work; a failing check is a ✗ with its reason and exit status 1."""
import sys, subprocess
from conftest import run_noisekd, ROOT

def test_check_passes_on_this_cpu(tmp_path):
    r = run_noisekd('check', '--device', 'cpu', '--out', tmp_path/'c', timeout=900)
    lines = r.stdout.splitlines()
    print(r.stdout)
    assert lines[0].startswith('noisekd check on CPU (cpu), torch ') and 'fast path:' in lines[0]
    checks = [l for l in lines if l[:1] in '✓✗']
    names = ['teacher (dropout 0.3)'] + [f'epoch: {m}' for m in ('baseline', 'hinton', 'ft', 'sr', 'ga', 'mc', 'at')] + \
            ['killed and resumed', 'PGD-20, 5 restarts', 'corruptions, one batch']
    assert [l[2:].split('  ')[0].strip() for l in checks] == names, checks
    assert all(l.startswith('✓') and ' cpu ' in l and 'img/s' in l for l in checks), checks
    assert 'same weights as uninterrupted' in r.stdout
    assert lines[-1] == f'{len(names)} of {len(names)} checks passed'

def test_check_refuses_a_bad_device(tmp_path):
    for dev, msg in [('gpu', "Unknown device 'gpu'"), ('cuda:3', "Device 'cuda:3'")]:
        r = run_noisekd('check', '--device', dev, '--out', tmp_path/'c', check=False)
        assert r.returncode == 2 and r.stdout == '', (r.stdout, r.stderr)
        err = [l for l in r.stderr.splitlines() if l.startswith('noisekd')]
        assert len(err) == 1 and msg in err[0] and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'c').exists()

def test_a_failed_check_exits_1(tmp_path):
    "A check that fails (here: the corruptions' photographs for frost made unreadable) is a ✗ naming why, and exit 1."
    code = f"""
import sys, noisekd.check as c
c.corrupt = lambda *a, **k: (_ for _ in ()).throw(OSError('frost photographs missing'))
c.check_methods = lambda out, device: [c.Line('epoch: baseline', 'cpu', ok=True, rate=1.)]
c.check_resume = lambda out, device: c.Line('killed and resumed', 'cpu', ok=True, rate=1.)
from noisekd.data import get_data
from noisekd.models import get_model
c.load_model = lambda *a, **k: get_model('wrn_10_1')
import pathlib; p = pathlib.Path(sys.argv[1])/'methods'/'baseline'; p.mkdir(parents=True); (p/'model.pth').touch()
sys.argv = ['noisekd', 'check', '--device', 'cpu', '--out', sys.argv[1]]
from noisekd.cli import main; main()
"""
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert '✗ corruptions, one batch' in r.stdout and 'OSError: frost photographs missing' in r.stdout
    assert r.stdout.splitlines()[-1] == '3 of 4 checks passed; failed: corruptions, one batch'
