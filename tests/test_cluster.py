"""Sweeps on a Dask cluster of 2 CPU worker processes: the same records as in-process, a killed worker survived with
nothing redone, teachers before students, `noisekd reproduce --cluster local` through papermill, and clear errors."""
import os, sys, json, time, signal, threading
from dataclasses import replace
from pathlib import Path
import pandas as pd, pytest, torch
from conftest import run_noisekd
from noisekd.core import NoisekdError
from noisekd.experiments import SCALES, plan, execute

def _mtimes(runs): return {p: p.stat().st_mtime_ns for p in Path(runs).rglob('model.pth')}

def _records(runs):
    "Every records.csv under `runs`, keyed by its folder relative to `runs`, without the absolute `run` path."
    runs = Path(runs)
    return pd.concat([pd.read_csv(f).drop(columns='run').assign(folder=str(f.parent.relative_to(runs)))
                      for f in sorted(runs.rglob('records.csv'))]).reset_index(drop=True)

def _in_process(runs, runs_dir, root):
    "The reference: `execute` in this process, with one torch thread like a worker."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: res = execute(runs, runs_dir, root=root, executor='inline', log=lambda *a: None)
    finally: torch.set_num_threads(n)
    assert not res['failed'], res['failed']

@pytest.fixture(scope='module')
def client():
    "Two CPU worker processes; locks of a dead worker expire after 3 s (30 s by default)."
    import dask
    from distributed import Client
    from noisekd.cluster import local_cluster
    env = dict(os.environ)
    with dask.config.set({'distributed.scheduler.locks.lease-timeout': '3s',
                          'distributed.scheduler.locks.lease-validation-interval': '500ms'}):
        cluster = local_cluster(2, dashboard=None)
    c = Client(cluster)
    yield c
    c.close(); cluster.close()
    os.environ.clear(); os.environ.update(env)      # the nannies set OMP_NUM_THREADS=1 here for their children

def test_workers_keep_freed_memory(client):
    "glibc in each worker keeps freed memory (Dask's nanny asks for a 64 KiB trim threshold: torch then re-faults its buffers every step)."
    from noisekd.cluster import MALLOC_ENV
    envs = client.run(lambda: {k: os.environ.get(k) for k in MALLOC_ENV})
    assert len(envs) == 2 and all(e == MALLOC_ENV for e in envs.values()), envs

def test_same_records_as_in_process_teachers_first_and_restart(client, tmp_path):
    "A tiny Table 1 on 2 workers: the records of the in-process run, students after their teacher's selection, a rerun skips all."
    from noisekd.cluster import execute_dask
    runs = plan('table1', 'digits', 'tiny', seeds=1)
    _in_process(runs, tmp_path/'ref', tmp_path/'data-ref')
    lines = []
    res = execute_dask(runs, tmp_path/'dask', client, root=tmp_path/'data', executor='inline', log=lines.append)
    assert not res['failed'] and len(res['done']) == len(runs) == 8, lines
    pd.testing.assert_frame_equal(_records(tmp_path/'ref'), _records(tmp_path/'dask'))
    done = [l for l in lines if '✓' in l]
    assert len(done) == 8 and all(l.startswith(f'[{k}/8 ') for k, l in enumerate(done, 1)), lines   # the bar counts runs across workers
    assert any('dashboard' in l for l in lines) and '8 run(s) done, 0 already done, 0 failed.' in lines
    tl = res['timeline'].set_index('run')
    assert set(tl.worker) == {'cpu0', 'cpu1'}                                  # both workers ran runs
    for r in runs:                                                             # every run started after the runs it needs finished
        from noisekd.experiments import run_deps
        for d in run_deps(r): assert tl.loc[r.name, 'start'] >= tl.loc[d.name, 'finish'], (r.name, d.name)
    assert sum(r.needs_teacher for r in runs) == 3
    before = _mtimes(tmp_path/'dask')
    res = execute_dask(runs, tmp_path/'dask', client, root=tmp_path/'data', executor='inline', log=lambda *a: None)
    assert len(res['skipped']) == 8 and _mtimes(tmp_path/'dask') == before  # a restarted driver picks up where it was

def test_killed_worker_loses_nothing(client, tmp_path, monkeypatch):
    "SIGKILL the worker process training a student: the sweep completes, finished runs are kept, the cut run resumes."
    from noisekd.cluster import execute_dask
    monkeypatch.setitem(SCALES, 'tiny6', replace(SCALES['tiny'], name='tiny6', epoch_scale=0.03))   # 6 epochs; the workers get it with each task
    runs = plan('table3', 'digits', 'tiny6', 1)
    _in_process(runs, tmp_path/'ref', tmp_path/'data')
    i, cut_run = next((i, r) for i, r in enumerate(runs) if r.method == 'ga')
    cut, out = tmp_path/'runs'/cut_run.path, {}
    t = threading.Thread(target=lambda: out.update(execute_dask(runs, tmp_path/'runs', client, root=tmp_path/'data',
                                                                executor='inline', log=lambda *a: None)))
    t.start()
    def history():
        try: return json.loads((cut/'metrics.json').read_text())['history']
        except (OSError, ValueError, KeyError): return []
    t0 = time.time()
    while not 2 <= len(history()) < 6 and t.is_alive() and time.time() - t0 < 240: time.sleep(0.02)
    worker = [w for w, keys in client.processing().items() if any(str(k).startswith('student-') and str(k).endswith(f'-{i}') for k in keys)]
    assert len(worker) == 1 and 2 <= len(history()) < 6, 'the student was not caught mid-run'
    pid = client.run(os.getpid, workers=worker)[worker[0]]
    os.kill(pid, signal.SIGKILL)
    seen, kept = history(), _mtimes(tmp_path/'runs')                           # what was done when the worker died
    t.join(300); assert not t.is_alive()
    assert not out['failed'] and len(out['done']) == len(runs), out['failed']
    assert all(_mtimes(tmp_path/'runs')[p] == m for p, m in kept.items())        # no finished run was redone
    h = history()
    assert len(h) == 6 and h[:len(seen)] == seen                               # the cut run went on from its checkpoint
    pd.testing.assert_frame_equal(_records(tmp_path/'ref'), _records(tmp_path/'runs'))
    client.wait_for_workers(2, timeout=60)                                     # the nanny started the worker again

def test_cli_local_cluster(tmp_path):
    "`noisekd reproduce … --cluster local --workers 2` as a user runs it."
    runs = tmp_path/'runs'
    r = run_noisekd('reproduce', 'table3', '--scale', 'tiny', '--seeds', '1', '--runs', runs, '--root', tmp_path/'data',
                    '--cluster', 'local', '--workers', '2', '--executor', 'inline')
    assert 'Started a Dask cluster on this machine: 2 worker(s), CPU only' in r.stdout and 'dashboard:' in r.stdout, r.stdout
    assert '4 run(s) done, 0 already done, 0 failed.' in r.stdout, r.stdout
    assert (runs/'tiny/digits/students/sr-s0.1-c0-T0/seed0'/'records.csv').is_file()

def test_papermill_runs_on_workers(client, tmp_path):
    "The default executor on the workers: each run's notebook executed by papermill into its folder."
    from noisekd.cluster import execute_dask
    runs = [r for r in plan('table3', 'digits', 'tiny', 1) if r.kind == 'teacher' or r.method == 'ga']   # two runs, side by side
    res = execute_dask(runs, tmp_path/'runs', client, root=tmp_path/'data', log=lambda *a: None)
    assert len(res['done']) == 2 and not res['failed'], res
    for r in runs: assert (tmp_path/'runs'/r.path/f'{r.kind}.ipynb').is_file() and (tmp_path/'runs'/r.path/'records.csv').is_file()

def test_clear_errors(tmp_path, monkeypatch, capsys):
    from noisekd.cli import reproduce, main
    from noisekd.cluster import execute_cluster
    with pytest.raises(NoisekdError, match='Could not reach a Dask scheduler at tcp://127.0.0.1:9'):
        execute_cluster(plan('table3', 'digits', 'tiny', 1), tmp_path/'runs', 'tcp://127.0.0.1:9', timeout=2, log=lambda *a: None)
    with pytest.raises(NoisekdError, match='each worker sees only its own GPU'):
        execute_cluster([], tmp_path/'runs', 'local', device='cuda:1')
    monkeypatch.setitem(sys.modules, 'distributed', None)                      # as if Dask were not installed
    with pytest.raises(NoisekdError, match=r'pip install "noisekd\[dask\]"'):
        reproduce('table3', scale='tiny', seeds=1, runs=tmp_path/'runs', cluster='local', log=lambda *a: None)
    with pytest.raises(SystemExit) as e: main(['reproduce', 'table3', '--scale', 'tiny', '--runs', str(tmp_path/'runs'), '--cluster', 'local'])
    assert e.value.code == 2 and 'pip install "noisekd[dask]"' in capsys.readouterr().err
    res = reproduce('table3', scale='tiny', seeds=1, runs=tmp_path/'runs', root=tmp_path/'data', executor='inline', log=lambda *a: None)
    assert len(res['done']) == 4                                               # the in-process path needs no Dask
    with pytest.raises(SystemExit) as e: main(['reproduce', 'table3', '--cluster', 'slurmm'])
    assert e.value.code == 2 and "Unknown cluster 'slurmm'. Did you mean 'slurm'?" in capsys.readouterr().err

def test_slurm_job_asks_for_a_gpu(monkeypatch):
    "The SLURM job script dask-jobqueue writes: one GPU per job, a worker that declares it, torch on the job's cores (no job is submitted)."
    pytest.importorskip('dask_jobqueue')
    import shutil, dask
    from noisekd.cluster import slurm_cluster
    cluster = slurm_cluster(0, cores=4, memory='16GB', queue='gpu', walltime='24:00:00')
    try: s = cluster.job_script()
    finally: cluster.close()
    assert '#SBATCH --gres=gpu:1' in s and '--resources GPU=1' in s and '#SBATCH -p gpu' in s, s
    assert 'export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}' in s, s
    with dask.config.set({'noisekd.slurm.gpu': False}):                          # CPU-only nodes, as in jobqueue.yaml
        cluster = slurm_cluster(0, cores=4, memory='16GB')
        try: s = cluster.job_script()
        finally: cluster.close()
        assert 'gres' not in s and 'GPU=1' not in s, s
    with dask.config.set({'noisekd.slurm.gpu': 'no'}), pytest.raises(NoisekdError, match='must be true or false'): slurm_cluster(0, cores=4, memory='16GB')
    with pytest.raises(NoisekdError, match='cores, memory'): slurm_cluster(0)
    monkeypatch.setattr(shutil, 'which', lambda cmd: None)                      # not a SLURM login node (whether this machine has SLURM or not)
    with pytest.raises(NoisekdError, match='sbatch is not on'): slurm_cluster(2, cores=4, memory='16GB')

def test_gpu_workers_each_see_their_own_gpu(tmp_path, monkeypatch):
    "A machine that shows GPUs 0 and 1: 3 workers take them in turn, each sees only its own and declares GPU=1; runs ask for one."
    from distributed import Client
    from noisekd.cluster import local_cluster, execute_dask
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1')           # no GPU here: the workers fall back to the CPU, the scheduling is the same
    env = dict(os.environ)
    try:
        with local_cluster(3, dashboard=None) as cluster, Client(cluster) as c:
            seen = c.run(lambda: os.environ['CUDA_VISIBLE_DEVICES'])
            info = c.scheduler_info()['workers'].values()
            assert sorted(seen.values()) == ['0', '0', '1'] and all(w['resources'] == {'GPU': 1} for w in info)
            assert sorted(w['name'] for w in info) == ['gpu0-0', 'gpu0-2', 'gpu1-1']
            lines = []
            runs = [r for r in plan('table3', 'digits', 'tiny', 1) if r.kind == 'teacher']
            res = execute_dask(runs, tmp_path/'runs', c, root=tmp_path/'data', executor='inline', log=lines.append)
            assert len(res['done']) == 1 and 'each run holds one GPU' in lines[0], lines
    finally: os.environ.clear(); os.environ.update(env)
