"""The label-noise pilot (issue 36): how a Fashion-MNIST teacher must be trained on two CPU cores to memorise corrupted
labels as the paper's 200-epoch WRN-40-2 teachers do (test accuracy 95.11 -> 78.94 / 55.53 % at c = 0.25 / 0.5), so that
the design of Fig. 4 in that regime can be fixed before it runs.

    python tools/pilot_label_noise.py --out ~/noisekd-ln-pilot --work &   # one worker of one thread per core: each
    python tools/pilot_label_noise.py --out ~/noisekd-ln-pilot --work     # claims the next run no other worker has
    python tools/pilot_label_noise.py --out ~/noisekd-ln-pilot --save     # records into noisekd/evidence/pilot-label-noise.*

After a kill, delete the `.claimed` files of unfinished runs and start the workers again: each run resumes from its
last checkpoint (and its fit curve from its file).

Every run is a WRN-16-2 teacher through `train_model` (its random streams, checkpoints and resume), on a subset of the
training images so that many epochs fit in the budget: the fewer images, the sooner a network can fit their wrong labels.
Every `EVERY` epochs a callback measures, on a fixed sample of the training images seen without augmentation, how many
of the labels the run was given it predicts (`fit_given`), how many of the corrupted ones it reproduces (`memorised`:
the wrong label itself) and how many of those it still classifies correctly (`clean_on_corrupted`). The test accuracy of
every epoch comes from the run's history.
"""
import argparse, json, os, platform, subprocess, time
from pathlib import Path
import pandas as pd, torch
from fastai.callback.core import Callback
from noisekd.core import load_json, save_json, atomic_write
from noisekd.train import train_model, cpu_bf16, run_complete
from noisekd.data import AUGMENT

DATA = dict(dataset='fashion-mnist', size=16, bs=128, lr=0.1, subset=10_000)   # all 10,000 test images
EPOCHS, EVERY, SAMPLE = 60, 5, 2_000   # the paper's step schedule stretched to 60 epochs; fit every 5 epochs on 2,000 images
ARMS = [  # (name, c, weight decay, augmentation), in the order workers take them: the paper's protocol (wd 5e-4, crops
          # and flips), then without augmentation (a network memorises sooner what it sees the same way every epoch), and
          # without weight decay
    ('c0', 0., 5e-4, 'crop+flip'), ('c0.25', 0.25, 5e-4, 'crop+flip'), ('c0.25-noaug', 0.25, 5e-4, 'none'),
    ('c0.5-noaug', 0.5, 5e-4, 'none'), ('c0-noaug', 0., 5e-4, 'none'), ('c0.25-wd0', 0.25, 0., 'crop+flip'),
    ('c0.5', 0.5, 5e-4, 'crop+flip')]


class LabelFit(Callback):
    "Every `every` epochs: the fit of a fixed sample of training images to the labels given, and to their clean labels."
    order = 60
    def __init__(self, path, every=EVERY, n=SAMPLE): self.path, self.every, self.n, self.rows = Path(path), every, n, []
    def before_fit(self):
        if (self.path/'label_fit.json').is_file(): self.rows = load_json(self.path/'label_fit.json')   # resumed
    def after_epoch(self):
        if (self.epoch + 1) % self.every and self.epoch + 1 != self.n_epoch: return
        ds = self.learn.dls.train.dataset
        g = torch.Generator().manual_seed(7919)   # not the seed the corruption drew its images with
        idx = torch.randperm(len(ds.y), generator=g)[:self.n]
        yc_all = ds.y if ds.y_clean is None else ds.y_clean
        x, y, yc = ds.x[idx], ds.y[idx], yc_all[idx]
        m = self.learn.model; was = m.training; m.eval()
        with torch.no_grad(): p = torch.cat([m(x[i:i+500].float() / 255).argmax(1).cpu() for i in range(0, len(x), 500)])
        m.train(was)
        bad = y != yc
        r = dict(epoch=self.epoch + 1, fit_given=100 * (p == y).float().mean().item(),
                 fit_clean=100 * (p == yc).float().mean().item(), n=len(y), n_corrupted=int(bad.sum()),
                 memorised=100 * (p[bad] == y[bad]).float().mean().item() if bad.any() else None,
                 clean_on_corrupted=100 * (p[bad] == yc[bad]).float().mean().item() if bad.any() else None)
        self.rows = [q for q in self.rows if q['epoch'] != r['epoch']] + [r]
        save_json(self.rows, self.path/'label_fit.json')


def run(out:Path, name, c, wd, aug):
    d = out/name
    t0 = time.time()
    old = AUGMENT[DATA['dataset']]; AUGMENT[DATA['dataset']] = aug   # the data chapter's default for this dataset, for this run
    try: rec = train_model(d, arch='wrn_16_2', drop=0., seed=0, epochs=EPOCHS, label_noise=c, wd=wd, progress=False,
                           extra_cbs=[LabelFit(d)], **DATA)
    finally: AUGMENT[DATA['dataset']] = old
    return rec, time.time() - t0


def claim(d:Path) -> bool:
    d.mkdir(parents=True, exist_ok=True)
    try: os.close(os.open(d/'.claimed', os.O_CREAT | os.O_EXCL)); return True
    except FileExistsError: return False


def work(out:Path):
    torch.set_num_threads(1)
    for name, c, wd, aug in ARMS:
        d = out/name
        if run_complete(d) or not claim(d): continue
        rec, s = run(out, name, c, wd, aug)
        fit = load_json(d/'label_fit.json')[-1]
        print(f"{name}: test {rec['last_acc']:.2f} %, fit of given labels {fit['fit_given']:.1f} %, "
              f"memorised {fit['memorised'] if fit['memorised'] is None else round(fit['memorised'], 1)} % ({s:.0f} s)", flush=True)


def collect(out:Path) -> pd.DataFrame:
    recs = []
    for name, c, wd, aug in ARMS:
        d = out/name
        if not (d/'metrics.json').is_file(): continue
        m = load_json(d/'metrics.json'); base = dict(arm=name, c=c, wd=wd, augment=aug, complete=m.get('complete', False))
        recs += [dict(base, epoch=h['epoch'] + 1, metric='test_acc', value=h['acc'], n=None, seconds=h['seconds']) for h in m['history']]
        for r in (load_json(d/'label_fit.json') if (d/'label_fit.json').is_file() else []):
            for k in ('fit_given', 'fit_clean', 'memorised', 'clean_on_corrupted'):
                if r[k] is not None: recs.append(dict(base, epoch=r['epoch'], metric=k, value=r[k],
                                                      n=r['n'] if k.startswith('fit') else r['n_corrupted'], seconds=None))
    return pd.DataFrame(recs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(Path.home()/'noisekd-ln-pilot'))
    ap.add_argument('--work', action='store_true', help='be one worker (one thread): start one per core')
    ap.add_argument('--save', action='store_true', help="write the runs' records into noisekd/evidence/")
    a = ap.parse_args(); out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.work: work(out)
    df = collect(out)
    atomic_write(out/'pilot.csv', df.to_csv(index=False))
    print(f"label-noise pilot: {len(df)} records in {out/'pilot.csv'}", flush=True)
    if a.save:
        ev = Path(__file__).resolve().parents[1]/'noisekd'/'evidence'
        atomic_write(ev/'pilot-label-noise.csv', df.to_csv(index=False))
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=ev).stdout.strip()
        how = dict(command='python tools/pilot_label_noise.py --out ~/noisekd-ln-pilot --work  (one per core), then --save',
                   commit=commit, threads_per_worker=1, machine=os.environ.get('NOISEKD_MACHINE', platform.processor() or platform.machine()),
                   bf16=cpu_bf16()[1], cores=os.cpu_count(), software=f"Python {platform.python_version()}, torch {torch.__version__}",
                   train_seconds=round(float(df.loc[df.metric == 'test_acc', 'seconds'].sum()), 1),
                   data=f"Fashion-MNIST (Debian's dataset-fashion-mnist), 16 px, {DATA['subset']:,} training images, all 10,000 test",
                   design=dict(epochs=EPOCHS, fit_every=EVERY, fit_sample=SAMPLE, arms=ARMS, arch='wrn_16_2', **DATA))
        atomic_write(ev/'pilot-label-noise.json', json.dumps(how, indent=1) + '\n')


if __name__ == '__main__': main()
