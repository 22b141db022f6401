"""Sweeps through a real one-node SLURM cluster (start it with `tests/slurm_fixture.sh start`, as root; `.ci/run` does):
worker jobs submitted with sbatch from the Dask jobqueue config, the records and report of the same sweep run locally,
a worker job cancelled (scancel) while its run trains, and a second `reproduce` after the whole sweep was killed.
Without a SLURM that answers, every test here skips and says why."""
import os, sys, json, time, signal, shutil, subprocess, threading
from dataclasses import replace
from pathlib import Path
import pandas as pd, pytest
from conftest import run_noisekd
from noisekd.experiments import SCALES, plan, execute

STATE = Path(os.environ.get('NOISEKD_SLURM_STATE', '/tmp/noisekd-slurm'))    # where tests/slurm_fixture.sh keeps its SLURM

def _slurm_conf():
    "The slurm.conf of a SLURM that answers on this machine; skips the test, saying why, when there is none."
    pytest.importorskip('dask_jobqueue', reason='dask-jobqueue is not installed (pip install -e ".[dev]")')
    why = (STATE/'reason').read_text().strip() if (STATE/'reason').is_file() else None
    conf = os.environ.get('SLURM_CONF') or ((STATE/'conf').read_text().strip() if (STATE/'conf').is_file() else '/etc/slurm/slurm.conf')
    if not shutil.which('sbatch') or not Path(conf).is_file():    # never let SLURM's tools look for a controller in DNS
        pytest.skip(f"no SLURM on this machine ({why or 'start one with: tests/slurm_fixture.sh start, as root'})")
    p = subprocess.run(['timeout', '15', 'sinfo', '-h', '-N', '-o', '%t'], capture_output=True, text=True, env=dict(os.environ, SLURM_CONF=conf))
    if p.returncode or not p.stdout.strip().startswith(('idle', 'mix', 'alloc')):
        pytest.skip(f"SLURM ({conf}) does not answer or its node is not up: sinfo says {(p.stdout + p.stderr).strip()[:200]!r}")
    return conf

@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    "SLURM_CONF set, and a Dask config dir with the jobqueue.yaml of the cluster chapter (CPU jobs, 1 core, 2 GB, 20 min each)."
    conf = _slurm_conf()
    d = tmp_path_factory.mktemp('dask-config')
    name = f'noisekd-test-{os.getpid()}'           # the job name: this module's jobs, told apart from any others in squeue
    (d/'jobqueue.yaml').write_text(f"""
jobqueue:
  slurm:
    name: {name}
    cores: 1
    memory: 2GB
    walltime: '00:20:00'
    interface: lo
    local-directory: {d}/scratch
    log-directory: {d}/job-logs
noisekd:
  slurm:
    gpu: false
""")
    env = dict(SLURM_CONF=conf, DASK_CONFIG=str(d))
    yield dict(env=env, name=name, logs=d/'job-logs')
    subprocess.run(['scancel', '--name', name], env=dict(os.environ, **env), capture_output=True)   # whatever a failed test left

def _squeue(env, name):
    "This module's jobs as squeue lists them: (id, state, cpus, memory, time limit)."
    p = subprocess.run(['squeue', '-h', '-n', name, '-o', '%i %T %C %m %l'], capture_output=True, text=True, env=dict(os.environ, **env))
    assert p.returncode == 0, f"squeue failed: {p.stderr}"          # an empty list means no job, never a squeue that did not answer
    return [tuple(l.split()) for l in p.stdout.splitlines()]

class _Watch(threading.Thread):
    "squeue every half second while a sweep runs: every (job, state, cpus, memory, limit) seen."
    def __init__(self, env, name):
        super().__init__(daemon=True); self.env, self.name, self.seen, self.done = env, name, set(), threading.Event()
    def run(self):
        while not self.done.wait(0.5): self.seen.update(_squeue(self.env, self.name))
    def __enter__(self): self.start(); return self
    def __exit__(self, *a): self.done.set(); self.join()

def _records(runs):
    runs = Path(runs)
    return pd.concat([pd.read_csv(f).drop(columns='run').assign(folder=str(f.parent.relative_to(runs)))
                      for f in sorted(runs.rglob('records.csv'))]).reset_index(drop=True)

def _mtimes(runs): return {p: p.stat().st_mtime_ns for p in Path(runs).rglob('model.pth')}

def _report(runs, out):
    run_noisekd('report', '--runs', runs, '--out', out)
    return (Path(out)/'report.md').read_text().replace(str(Path(runs).resolve()), 'RUNS').replace(str(runs), 'RUNS')

SWEEP = ('reproduce', 'table1', '--scale', 'tiny', '--seeds', '1', '--executor', 'inline')

@pytest.fixture(scope='module')
def local(tmp_path_factory):
    "The reference: the same sweep on a local Dask cluster of 2 workers; its runs folder and wall time."
    d = tmp_path_factory.mktemp('local')
    t0 = time.time()
    r = run_noisekd(*SWEEP, '--runs', d/'runs', '--root', d/'data', '--cluster', 'local', '--workers', '2')
    assert '8 run(s) done, 0 already done, 0 failed.' in r.stdout, r.stdout
    return dict(runs=d/'runs', wall=time.time() - t0, report=_report(d/'runs', d/'report'))

def test_sweep_through_slurm(slurm, local, tmp_path):
    "`reproduce table1 --cluster slurm --workers 2`: 2 sbatch jobs sized by jobqueue.yaml, each run once, teachers first, the local records and report, no job left."
    with _Watch(slurm['env'], slurm['name']) as w:
        t0 = time.time()
        r = run_noisekd(*SWEEP, '--runs', tmp_path/'runs', '--root', tmp_path/'data', '--cluster', 'slurm', '--workers', '2', env=slurm['env'])
        wall = time.time() - t0
    out = r.stdout
    print(out); print(f"wall time: local {local['wall']:.0f} s, SLURM {wall:.0f} s; squeue showed {sorted(w.seen)}")
    assert 'Asked SLURM for 2 worker job(s) (CPU only)' in out and '8 run(s) done, 0 already done, 0 failed.' in out, out
    jobs = {j for j, *_ in w.seen}
    assert len(jobs) == 2 and all((s, c, m, l) == ('RUNNING', '1', '2G', '20:00') for _, s, c, m, l in w.seen if s == 'RUNNING'), w.seen
    assert f"The SLURM worker job(s) {', '.join(sorted(jobs, key=int))} are gone: squeue lists none of them." in out, out
    assert _squeue(slurm['env'], slurm['name']) == []
    assert {p.name for p in slurm['logs'].iterdir()} >= {f'{slurm["name"]}-{j}.err' for j in jobs}   # sbatch's own job logs
    done = [l.split('✓ ')[1].split(' (')[0] for l in out.splitlines() if '✓' in l]
    runs = plan('table1', 'digits', 'tiny', 1)
    assert sorted(done) == sorted(r.name for r in runs)                       # every run once
    from noisekd.experiments import run_deps
    for run in runs:
        for dep in run_deps(run): assert done.index(dep.name) < done.index(run.name), (dep.name, run.name)
    assert any(f'(job {j})' in out for j in jobs)                             # the runs ran inside the SLURM jobs
    pd.testing.assert_frame_equal(_records(local['runs']), _records(tmp_path/'runs'))
    assert _report(tmp_path/'runs', tmp_path/'report') == local['report']

@pytest.fixture
def tiny6(monkeypatch):
    monkeypatch.setitem(SCALES, 'tiny6', replace(SCALES['tiny'], name='tiny6', epoch_scale=0.03))   # 6 epochs; the workers get it with each task
    return 'tiny6'

def _history(folder):
    try: return json.loads((folder/'metrics.json').read_text())['history']
    except (OSError, ValueError, KeyError): return []

def test_a_job_slurm_refuses_is_a_clear_error(slurm, monkeypatch):
    "A worker job this SLURM cannot run (a GPU on a node without one, more cores than it has): an error at once, nothing queued."
    from noisekd.core import NoisekdError
    from noisekd.cluster import slurm_cluster
    for k, v in slurm['env'].items(): monkeypatch.setenv(k, v)
    common = dict(name=slurm['name'], memory='1GB', walltime='00:05:00', interface='lo')
    with pytest.raises(NoisekdError, match=r'SLURM refuses the worker job \(sbatch: error: Invalid generic resource.*gpu: false'):
        slurm_cluster(1, gpu=True, cores=1, **common)
    with pytest.raises(NoisekdError, match=r'SLURM refuses the worker job \(.*Requested node configuration is not available'):
        slurm_cluster(1, gpu=False, cores=4096, **common)
    assert _squeue(slurm['env'], slurm['name']) == []

def test_scancel_a_worker_job_mid_run(slurm, tiny6, tmp_path, monkeypatch):
    "scancel the job whose worker trains a student: the sweep says so, the run resumes from its checkpoint elsewhere, nothing lost or redone."
    import dask
    from noisekd.cluster import dask_client, execute_dask
    for k, v in slurm['env'].items(): monkeypatch.setenv(k, v)
    locks = {'distributed.scheduler.locks.lease-timeout': '8s', 'distributed.scheduler.locks.lease-validation-interval': '1s'}
    for k, v in locks.items(): monkeypatch.setenv('DASK_' + k.upper().replace('.', '__').replace('-', '_'), v)   # in the jobs too
    runs = plan('table3', 'digits', tiny6, 1)
    ref = tmp_path/'ref'
    import torch; t = torch.get_num_threads(); torch.set_num_threads(1)
    try: assert not execute(runs, ref, root=tmp_path/'data', executor='inline', log=lambda *a: None)['failed']
    finally: torch.set_num_threads(t)
    i, cut_run = next((i, r) for i, r in enumerate(runs) if r.method == 'ga')
    cut, lines, out = tmp_path/'runs'/cut_run.path, [], {}
    cfg = {f'jobqueue.slurm.{k}': v for k, v in dict(name=slurm['name'], cores=1, memory='2GB', walltime='00:20:00', interface='lo',
                                                       log_directory=str(slurm['logs'])).items()}
    log = lambda s: (lines.append(s), print(s, flush=True))
    with dask.config.set({**cfg, **locks}), dask_client('slurm', 2, gpu=False, log=log) as client:
        th = threading.Thread(target=lambda: out.update(execute_dask(runs, tmp_path/'runs', client, root=tmp_path/'data',
                                                                     executor='inline', log=log)))
        th.start(); t0 = time.time()
        while not 2 <= len(_history(cut)) < 6 and th.is_alive() and time.time() - t0 < 300: time.sleep(0.05)
        holder = [a for a, keys in client.processing().items() if any(str(k).startswith('student-') and str(k).endswith(f'-{i}') for k in keys)]
        assert len(holder) == 1 and 2 <= len(_history(cut)) < 6, 'the student was not caught mid-run'
        job = client.run(lambda: os.environ['SLURM_JOB_ID'], workers=holder)[holder[0]]
        subprocess.run(['scancel', job], check=True); t_kill = time.time()
        seen, kept = _history(cut), _mtimes(tmp_path/'runs')
        print(f"scancel {job} at epoch {len(seen)} of {cut_run.name}")
        th.join(400); assert not th.is_alive()
        lost = {w['worker'].split('SLURM job ')[-1].rstrip(')') for w in out['lost']}
        while len(client.scheduler_info()['workers']) < 2 and time.time() - t_kill < 120: time.sleep(0.5)   # dask-jobqueue replaces the job
        now = {j for j, st, *_ in _squeue(slurm['env'], slurm['name']) if st == 'RUNNING'}
        print(f"squeue {time.time() - t_kill:.0f} s after scancel {job}: running jobs {sorted(now)}")
        assert len(now) == 2 and job not in now and lost == {job}, (now, lost)   # 2 jobs again: one new
    assert not out['failed'] and len(out['done']) == len(runs), (out['failed'], lines)
    assert len(out['lost']) == 1 and out['lost'][0]['worker'].endswith(f'(SLURM job {job})'), out['lost']
    left = [l for l in lines if f'(SLURM job {job}) left' in l]
    assert len(left) == 1, lines
    held, at = out['lost'][0]['runs'], lines.index(left[0])
    # A result still on its way to the driver when the job went (the teacher's `select`, once in CI) is lost with the job: the
    # watch names it too, and Dask computes it again, so the driver's one ✓ for it comes after the leaving.
    done_at = lambda n: [k for k, l in enumerate(lines) if f"✓ {n} (" in l or f"= {n} (already done)" in l]
    assert cut_run.name in held and all(n in left[0] for n in held) and 'resumes from the last checkpoint' in left[0], lines
    assert all(len(done_at(n)) == 1 and done_at(n)[0] > at for n in held if n != cut_run.name), lines
    resumed = [l for l in lines if '✓' in l and cut_run.name in l]
    assert len(resumed) == 1 and 'resumed after epoch' in resumed[0] and f'(job {job})' not in resumed[0], lines
    assert sum('✓' in l or '(already done)' in l for l in lines) == len(runs)       # every run once
    assert all(_mtimes(tmp_path/'runs')[p] == m for p, m in kept.items())            # no finished run was redone
    h = _history(cut)
    assert len(h) == 6 and h[:len(seen)] == seen                                   # the cut run went on from its checkpoint
    pd.testing.assert_frame_equal(_records(ref), _records(tmp_path/'runs'))
    assert _squeue(slurm['env'], slurm['name']) == []

def test_rerun_after_the_whole_sweep_was_killed(slurm, local, tmp_path):
    "SIGKILL the driver mid-sweep: its jobs leave squeue, and a second `reproduce` skips the finished runs and completes the rest."
    runs = tmp_path/'runs'
    cmd = [sys.executable, '-m', 'noisekd.cli', *SWEEP, '--runs', str(runs), '--root', str(tmp_path/'data'), '--cluster', 'slurm', '--workers', '2']
    p = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED='1', **slurm['env']), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = []
    for line in p.stdout:                                    # kill it once two runs are done
        first.append(line)
        if sum('✓' in l for l in first) == 2: break
    jobs = {j for j, *_ in _squeue(slurm['env'], slurm['name'])}
    p.send_signal(signal.SIGKILL); p.wait()
    t0 = time.time()
    while _squeue(slurm['env'], slurm['name']) and time.time() - t0 < 90: time.sleep(0.5)
    print(f"driver killed after 2 runs; its jobs {sorted(jobs)} left squeue {time.time() - t0:.1f} s later")
    assert _squeue(slurm['env'], slurm['name']) == [], 'the worker jobs of a killed driver stayed in squeue'
    from noisekd.experiments import run_done
    finished, kept = [r.name for r in plan('table1', 'digits', 'tiny', 1) if run_done(r, runs)], _mtimes(runs)
    r = run_noisekd(*cmd[3:], env=slurm['env'])
    print(r.stdout)
    skipped = [l.split('= ')[1].split(' (')[0] for l in r.stdout.splitlines() if '(already done)' in l]
    assert len(finished) >= 2 and sorted(skipped) == sorted(finished), (finished, r.stdout)
    assert f'{8 - len(finished)} run(s) done, {len(finished)} already done, 0 failed.' in r.stdout, r.stdout
    assert all(_mtimes(runs)[p] == m for p, m in kept.items())                    # nothing finished was trained again
    pd.testing.assert_frame_equal(_records(local['runs']), _records(runs))

def test_a_stopped_driver_cancels_its_jobs(slurm, tmp_path):
    "SIGTERM to `reproduce` (a `kill`, a driver job at its wall time) mid-sweep: it cancels its worker jobs, waits until squeue lists none, exits 130."
    cmd = [sys.executable, '-m', 'noisekd.cli', 'reproduce', 'table3', '--scale', 'tiny', '--seeds', '1', '--executor', 'inline',
           '--runs', str(tmp_path/'runs'), '--root', str(tmp_path/'data'), '--cluster', 'slurm', '--workers', '2']
    p = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED='1', **slurm['env']), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if '✓' in line: break                                 # a run is done, the others are under way
    jobs = {j for j, *_ in _squeue(slurm['env'], slurm['name'])}
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=120)
    print(''.join(lines) + rest, err)
    assert p.returncode == 130 and 'interrupted; finished work is kept' in err, (p.returncode, err)
    assert len(jobs) == 2 and f"The SLURM worker job(s) {', '.join(sorted(jobs, key=int))} are gone" in rest, (jobs, rest)
    assert _squeue(slurm['env'], slurm['name']) == []                            # gone when the command returned
