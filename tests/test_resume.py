"""Kill a training process with SIGKILL at random moments and resume it: the final weights must equal an
uninterrupted run's (seeded, CPU)."""
import os, sys, json, time, random, signal, subprocess
from pathlib import Path
import pytest, torch
from conftest import ROOT, TALLY

pytestmark = pytest.mark.trains   # a resumed run equals an uninterrupted one: tools/cpu_matrix.sh runs it under other CPUs

SCRIPT = """
import sys
from noisekd.train import train_student
train_student(sys.argv[1], 'digits', 'wrn_10_1', method={method!r}, teacher={teacher!r}, seed=7, size=16, epochs=6,
              subset=160, test_subset=64, bs=32, progress=False, params={params!r})
"""

def _run(out, kill_after=None, **kw):
    code = SCRIPT.format(method=kw.get('method', 'baseline'), teacher=kw.get('teacher'), params=kw.get('params', {}))
    p = subprocess.Popen([sys.executable, '-c', code, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        _, err = p.communicate(timeout=600); assert p.returncode == 0, err; return 'done'
    epochs, delay = kill_after
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300:      # wait until `epochs` epochs are checkpointed
        m = Path(out)/'metrics.json'
        try: done = json.loads(m.read_text()).get('epochs_done', 0) if m.exists() else 0
        except ValueError: done = 0
        if done >= epochs: break
        time.sleep(0.01)
    time.sleep(delay)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL); p.wait(); return 'killed'
    assert p.returncode == 0, p.stderr.read(); return 'done'

def _weights(out): return torch.load(Path(out)/'model.pth', weights_only=True)['model']

def _kill_and_resume(tmp_path, n_kills, **kw):
    _run(tmp_path/'ref', **kw)
    rng, kills = random.Random(0), 0
    out = tmp_path/'cut'
    for i in range(n_kills):      # random moments: after k checkpointed epochs plus a random part of an epoch
        if _run(out, kill_after=(rng.randint(0, 4), rng.uniform(0, 0.4)), **kw) == 'killed': kills += 1
    while not (out/'model.pth').exists(): _run(out, **kw)
    a, b = _weights(tmp_path/'ref'), _weights(out)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    TALLY['kills'] += kills; TALLY['runs lost'] += 0 if same else 1
    assert same, 'the resumed run ended with other weights than the uninterrupted one'
    ra, rb = (json.loads((p/'metrics.json').read_text()) for p in (tmp_path/'ref', out))
    assert [h['acc'] for h in ra['history']] == [h['acc'] for h in rb['history']]
    assert [h['train_loss'] for h in ra['history']] == [h['train_loss'] for h in rb['history']]
    assert not list(out.glob('.*.tmp')), 'a temporary file was left behind'
    return kills

def test_sigkill_resume_baseline(tmp_path):
    assert _kill_and_resume(tmp_path, 3) >= 1

def test_sigkill_resume_fickle_teacher(tmp_path):
    "The Fickle Teacher draws dropout masks from the same generators: a resumed run still matches."
    from noisekd.train import train_teacher
    sel = train_teacher(tmp_path/'teacher', 'digits', 'wrn_10_1', drop=0.3, seeds=1, size=16, epochs=1, subset=96,
                        test_subset=32, bs=32, progress=False)
    assert _kill_and_resume(tmp_path, 2, method='ft+sr', teacher=sel['best_path'], params=dict(sigma=0.1)) >= 1
