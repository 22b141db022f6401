"""The evidence pilot: how each arm converges on full Fashion-MNIST, and how much the paired differences the
paper's claims compare vary from seed to seed, so that the CPU study's design can be fixed before it runs.

    python tools/pilot.py --out ~/noisekd-pilot --work &      # one worker of one thread per core: each claims
    python tools/pilot.py --out ~/noisekd-pilot --work        # the next run no other worker has (`.claimed`)
    python tools/pilot.py --out ~/noisekd-pilot --save        # collects the finished runs into noisekd/evidence/pilot-fashion-mnist.*

A run waits for its teacher. After a kill, delete the `.claimed` files of unfinished runs and start the workers again.
Every run goes through `train_model` with its random streams: arms of one seed share initialization, batches and
crops (see the core chapter). Training and evaluation resume after a kill.
"""
import argparse, json, os, platform, subprocess, time
from pathlib import Path
import pandas as pd, torch
from noisekd.core import load_json, save_json, atomic_write
from noisekd.train import train_model, load_model, cpu_bf16, run_complete
from noisekd.evaluate import evaluate
from noisekd.callbacks import feature_weight

DATA = dict(dataset='fashion-mnist', size=16, bs=128, lr=0.1)   # full 60,000 training and 10,000 test images
T_SCALE, S_SCALE = 0.05, 0.03          # teachers: 10 epochs; students: 6 (a Fickle Teacher's student: 9, as the paper's longer schedule)
SEEDS = (0, 1, 2)
PGD = dict(pgd_n=5000, restarts=2)     # PGD-20, ε = 8/255, on 5,000 test images


def arms():
    "(name, method, teacher p, params, schedule, epoch scale, seeds, evals)."
    at = feature_weight('at', DATA['size'])
    main = [('baseline', 'baseline', 0., {}, 'standard'), ('hinton', 'hinton', 0., {}, 'standard'),
            ('ft-0.3', 'ft', 0.3, {}, 'ft-mid'), ('sr-0.05', 'sr', 0., dict(sigma=0.05), 'standard'),
            ('ga-0.05', 'ga', 0., dict(sigma=0.05), 'standard'), (f'at-b{at:g}', 'at', 0., dict(weight=at), 'standard')]
    out = []
    for s in SEEDS:
        for name, m, p, par, sch in main:
            ev = ('clean', 'pgd20') if m in ('sr', 'ga') else ('clean',)
            out.append((name, m, p, par, sch, S_SCALE, s, ev))
    out += [('baseline-12ep', 'baseline', 0., {}, 'standard', 2 * S_SCALE, 0, ('clean',)),   # convergence: twice the epochs
            ('at-b1000', 'at', 0., dict(weight=1000.), 'standard', S_SCALE, 0, ('clean',))]    # AT's β: the paper's, unscaled
    return out


def teacher(out, p):
    d = Path(out)/f'teacher-p{p:g}'
    rec = train_model(d, arch='wrn_16_2', drop=p, seed=0, scale=T_SCALE, progress=False, **DATA)
    return d, rec


def student(out, tpath, name, method, p, params, schedule, scale, seed, evals):
    d = Path(out)/name/f'seed{seed}'
    t0 = time.time()
    rec = train_model(d, arch='wrn_10_1', method=method, params=params, teacher=tpath if method not in ('baseline', 'ga') else None,
                      seed=seed, schedule=schedule, scale=scale, progress=False, **DATA)
    ev = d/'evals.json'
    if not ev.is_file():
        e = evaluate(load_model(d), DATA['dataset'], evals, size=DATA['size'], seed=0, progress=False, **PGD)
        save_json(dict(records=e.to_dict('records'), seconds=round(time.time() - t0, 1)), ev)
    return rec, load_json(ev)


def rows(kind, name, method, p, params, seed, rec, evals=None):
    m = rec['meta']; base = dict(kind=kind, arm=name, method=method, p=p, sigma=params.get('sigma'), weight=params.get('weight'),
                                 seed=seed, epochs=m['epochs'])
    out = [dict(base, metric='test_acc_epoch', epoch=h['epoch'] + 1, value=h['acc'], n=None, seconds=h['seconds']) for h in rec['history']]
    for r in (evals or {}).get('records', []):
        if r['metric'] in ('clean_acc', 'pgd20_acc'): out.append(dict(base, metric=r['metric'], epoch=None, value=r['value'], n=r['n'], seconds=None))
    return out


def claim(d:Path) -> bool:
    "Take run folder `d` for this worker (False: another worker has it)."
    d.mkdir(parents=True, exist_ok=True)
    try: os.close(os.open(d/'.claimed', os.O_CREAT | os.O_EXCL)); return True
    except FileExistsError: return False


def work(out:Path):
    "Train and evaluate every pilot run not claimed by another worker, in the list's order; runs wait for their teacher."
    torch.set_num_threads(1)
    todo = [('teacher', p) for p in (0., 0.3)] + arms()
    while todo:
        for job in todo:
            if job[0] == 'teacher': d, ready = out/f'teacher-p{job[1]:g}', True
            else: d, ready = out/job[0]/f'seed{job[6]}', done(out/f'teacher-p{job[2]:g}') or job[1] in ('baseline', 'ga')
            if done(d) and (job[0] == 'teacher' or (d/'evals.json').is_file()): todo.remove(job); break
            if not ready or not claim(d): continue
            if job[0] == 'teacher':
                rec = teacher(out, job[1])[1]; print(f"teacher p={job[1]:g}: {rec['last_acc']:.2f}%", flush=True)
            else:
                name, m, p, par, sch, sc, s, ev = job
                rec, e = student(out, out/f'teacher-p{p:g}', name, m, p, par, sch, sc, s, ev)
                got = {r['metric']: r['value'] for r in e['records']}
                print(f"{name} seed {s}: clean {got.get('clean_acc', float('nan')):.2f}%" +
                      (f", PGD-20 {got['pgd20_acc']:.2f}%" if 'pgd20_acc' in got else '') + f" ({e['seconds']:.0f} s)", flush=True)
            todo.remove(job); break
        else: time.sleep(20)    # everything left is another worker's, or waits for a teacher


def done(d:Path) -> bool: return run_complete(d)


def collect(out:Path) -> list:
    "The records of every finished run under `out`."
    recs = []
    for p in (0., 0.3):
        if done(out/f'teacher-p{p:g}'): recs += rows('teacher', f'teacher-p{p:g}', 'teacher', p, {}, 0, load_json(out/f'teacher-p{p:g}'/'metrics.json'))
    for name, m, p, par, sch, sc, s, ev in arms():
        d = out/name/f'seed{s}'
        if done(d) and (d/'evals.json').is_file(): recs += rows('student', name, m, p, par, s, load_json(d/'metrics.json'), load_json(d/'evals.json'))
    return recs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(Path.home()/'noisekd-pilot'))
    ap.add_argument('--work', action='store_true', help='be one worker (one thread): start one per core')
    ap.add_argument('--save', action='store_true', help='write the finished runs\' records into noisekd/evidence/')
    a = ap.parse_args(); out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if a.work: work(out)
    recs = collect(out)
    df = pd.DataFrame(recs)
    atomic_write(out/'pilot.csv', df.to_csv(index=False))
    wall = time.time() - t_start
    print(f"pilot: {len(df)} records in {out/'pilot.csv'}; this call {wall:.0f} s", flush=True)
    if a.save:
        ev = Path(__file__).resolve().parents[1]/'noisekd'/'evidence'
        atomic_write(ev/'pilot-fashion-mnist.csv', df.to_csv(index=False))
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=ev).stdout.strip()
        how = dict(command='python tools/pilot.py --out ~/noisekd-pilot --work  (one per core), then: python tools/pilot.py --out ~/noisekd-pilot --save',
                   commit=commit, threads_per_worker=1,
                   machine=os.environ.get('NOISEKD_MACHINE', platform.processor() or platform.machine()), bf16=cpu_bf16()[1],
                   cores=os.cpu_count(), software=f"Python {platform.python_version()}, torch {torch.__version__}",
                   train_seconds=round(float(df.loc[df.metric == 'test_acc_epoch', 'seconds'].sum()), 1),
                   data='Fashion-MNIST from Debian package dataset-fashion-mnist, 16 px, all 60,000/10,000 images')
        atomic_write(ev/'pilot-fashion-mnist.json', json.dumps(how, indent=1) + '\n')


if __name__ == '__main__': main()
