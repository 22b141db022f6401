"""Experiments end to end at the tiny scale: the notebooks through papermill, `reproduce` (run count, skip, resume
after a kill, going on past a failure), the report and the demo."""
import os, sys, json, time, signal, subprocess, textwrap
from pathlib import Path
import shutil
import pandas as pd, pytest, torch
from conftest import ROOT, TALLY, run_noisekd

def _mtimes(runs): return {p: p.stat().st_mtime_ns for p in Path(runs).rglob('model.pth')}

def test_notebooks_through_papermill(tmp_path, fake_data):
    "Each experiment notebook runs top to bottom through `noisekd run` at the tiny scale and keeps its executed copy."
    t, s = tmp_path/'teacher', tmp_path/'student'
    run_noisekd('run', 'teacher', '-p', 'scale', 'tiny', '-p', 'p', '0.3', '-p', 'out', t, '-p', 'root', tmp_path/'data')
    run_noisekd('run', 'student', '-p', 'scale', 'tiny', '-p', 'method', 'ft', '-p', 'teacher', t, '-p', 'out', s,
                '-p', 'evals', '["clean", "corruptions", "pgd20"]', '-p', 'root', tmp_path/'data')
    assert (t/'teacher.ipynb').is_file() and (s/'student.ipynb').is_file()
    rec = pd.read_csv(s/'records.csv')
    assert {'clean_acc', 'mca', 'pgd20_acc'} <= set(rec.metric) and set(rec.method) == {'ft'} and rec.p.iloc[0] == 0.3
    run_noisekd('run', 'student', '-p', 'scale', 'tiny', '-p', 'method', 'ft', '-p', 'teacher', t, '-p', 'out', s,
                '-p', 'evals', "['clean']", '-p', 'progress', 'False', '-p', 'root', tmp_path/'data')   # as Python and papermill users
    # type them (a Python list, papermill's False); another table asks the run for less: it keeps the rest
    assert set(pd.read_csv(s/'records.csv').metric) == set(rec.metric)
    run_noisekd('run', 'evaluate', '-p', 'model', s, '-p', 'scale', 'tiny', '-p', 'evals', '["clean", "pgd_eps"]',
                '-p', 'out', tmp_path/'eval.csv', '-p', 'root', tmp_path/'data', '--output', tmp_path/'evaluate.ipynb')
    ev = pd.read_csv(tmp_path/'eval.csv')
    assert {'clean_acc', 'pgd20_eps2_acc', 'pgd20_eps50_acc'} <= set(ev.metric)
    # CIFAR-10 fixture in the official format: OOD (CINIC) and CIFAR-10-C go through the real loaders
    from noisekd.data import load_cifar10
    from noisekd.robustness import write_corrupted_set
    write_corrupted_set(load_cifar10(fake_data, train=False), fake_data/'CIFAR-10-C-gen', corruptions=['contrast', 'fog'], progress=False)
    c = tmp_path/'cifar'
    run_noisekd('run', 'student', '-p', 'dataset', 'cifar10', '-p', 'scale', 'tiny', '-p', 'out', c, '-p', 'root', fake_data,
                '-p', 'evals', '["clean", "ood"]')
    assert 'ood_cinic_acc' in set(pd.read_csv(c/'records.csv').metric)
    run_noisekd('run', 'report', '-p', 'runs', tmp_path, '-p', 'out', tmp_path/'report', '--output', tmp_path/'report.ipynb')
    assert (tmp_path/'report'/'report.html').is_file()

def test_bad_notebook_parameters_fail_first(tmp_path):
    r = run_noisekd('run', 'student', '-p', 'method', 'sr', '-p', 'sigma', '-1', '-p', 'out', tmp_path/'s', check=False)
    assert r.returncode == 2 and 'sigma must satisfy 0 <= sigma' in r.stderr
    assert not (tmp_path/'s'/'model.pth').exists()

def test_reproduce_counts_skips_and_reports_failures(tmp_path):
    runs = tmp_path/'runs'
    args = ('reproduce', 'table1', '--scale', 'tiny', '--seeds', '2', '--runs', runs, '--root', tmp_path/'data', '--executor', 'inline')
    r = run_noisekd(*args)
    assert "14 runs (4 teacher seeds, 8 student seeds)" in r.stdout and '14 run(s) done, 0 already done, 0 failed' in r.stdout
    before = _mtimes(runs); assert len(before) == 12
    r = run_noisekd(*args)                                        # a second call retrains nothing
    assert '0 run(s) done, 14 already done, 0 failed' in r.stdout and _mtimes(runs) == before
    # an injected failure: one student's folder holds another run's checkpoint; the others still run and the failure is named
    bad = runs/'tiny/digits/students/at+h-c0-T0/seed1'
    bad.mkdir(parents=True); torch.save(dict(meta='{"seed": 99}', model={}, opt={}), bad/'checkpoint.pth')
    dmg = runs/'tiny/digits/students/at-c0-T0/seed1'; shutil.rmtree(dmg); dmg.mkdir(); (dmg/'checkpoint.pth').write_bytes(b'garbage')
    r = run_noisekd('reproduce', 'table2', '--scale', 'tiny', '--seeds', '2', '--runs', runs, '--root', tmp_path/'data',
                    '--executor', 'inline', check=False)
    assert r.returncode == 1
    assert 'failed: tiny/digits/students/at+h-c0-T0/seed1' in r.stdout and 'belongs to a different run' in r.stdout
    assert (runs/'tiny/digits/students/at+ft-c0-T0.3/seed1'/'model.pth').is_file()      # the sweep went on
    assert 'is damaged' in r.stderr and 'starts over' in r.stderr, r.stderr[-2000:]      # a damaged checkpoint: the run restarted
    assert (dmg/'model.pth').is_file() and len(list(dmg.glob('checkpoint.pth.damaged-*'))) == 1
    (bad/'checkpoint.pth').unlink()
    r = run_noisekd('reproduce', 'table2', '--scale', 'tiny', '--seeds', '2', '--runs', runs, '--root', tmp_path/'data', '--executor', 'inline')
    assert '1 run(s) done' in r.stdout and '0 failed' in r.stdout

SWEEP = textwrap.dedent("""
    import sys
    from dataclasses import replace
    from noisekd.experiments import SCALES, plan, execute
    SCALES['tiny6'] = replace(SCALES['tiny'], name='tiny6', epoch_scale=0.03)     # 6 epochs: time to be killed mid-run
    res = execute(plan('table3', 'digits', 'tiny6', 1), sys.argv[1], root=sys.argv[2], executor='inline', log=lambda *a: None)
    sys.exit(1 if res['failed'] else 0)
""")

def _sweep(runs, data, kill_when=None):
    p = subprocess.Popen([sys.executable, '-c', SWEEP, str(runs), str(data)], stderr=subprocess.PIPE, text=True)
    if kill_when is None: _, err = p.communicate(timeout=600); assert p.returncode == 0, err; return
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300 and not kill_when(): time.sleep(0.02)
    assert p.poll() is None, 'the sweep ended before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait()

@pytest.mark.trains
def test_reproduce_killed_mid_sweep_resumes(tmp_path):
    "SIGKILL a sweep while a student trains; the rerun redoes no finished run, resumes the cut one and ends as an uninterrupted sweep."
    ref, runs, data = tmp_path/'ref', tmp_path/'runs', tmp_path/'data'
    _sweep(ref, data)
    cut = runs/'tiny6/digits/students/ga-s0.1-c0/seed0'
    def mid_run():
        m = cut/'metrics.json'
        try: return m.exists() and 2 <= json.loads(m.read_text())['epochs_done'] < 6
        except (ValueError, KeyError): return False
    _sweep(runs, data, kill_when=mid_run)
    done_before = {p: t for p, t in _mtimes(runs).items()}
    assert done_before and not (cut/'model.pth').exists() and (cut/'checkpoint.pth').exists()
    _sweep(runs, data)
    redone = sum(_mtimes(runs)[p] != t for p, t in done_before.items())
    TALLY['kills'] += 1; TALLY['runs lost'] += redone
    assert redone == 0                                                          # finished runs were not redone
    a = pd.concat([pd.read_csv(f) for f in sorted(ref.rglob('records.csv'))]).drop(columns='run').reset_index(drop=True)
    b = pd.concat([pd.read_csv(f) for f in sorted(runs.rglob('records.csv'))]).drop(columns='run').reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)                                          # the same results as an uninterrupted sweep
    from noisekd.report import write_report
    ra, rb = write_report(ref, tmp_path/'rep_a'), write_report(runs, tmp_path/'rep_b')
    assert (tmp_path/'rep_a'/'summary.csv').read_text() == (tmp_path/'rep_b'/'summary.csv').read_text()   # and the same report
    pd.testing.assert_frame_equal(ra['claims'], rb['claims'])

def test_demo_tiny_writes_every_figure(tmp_path):
    "`noisekd demo` through the same path at the tiny scale: every table, the report and its figures."
    r = run_noisekd('demo', '--scale', 'tiny', '--out', tmp_path/'demo')
    assert 'report:' in r.stdout and 'failed' in r.stdout
    figs = {p.name for p in (tmp_path/'demo'/'report'/'figures').iterdir()}
    for f in ('fig2_pgd20_vs_sigma', 'table4_pgd_vs_steps', 'table5_pgd_vs_eps', 'fig3_per_corruption', 'fig4_label_noise_test'):
        assert f'tiny_digits_{f}.png' in figs, figs
    md = (tmp_path/'demo'/'report'/'report.md').read_text()
    assert "The paper's claims" in md and 'for orientation' in md
