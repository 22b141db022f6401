"""The fast path trains as well as the plain one, and the benchmark runs (tiny, on the CPU). No timing is asserted:
the speed targets are measured by `noisekd bench`, not by tests."""
import os, math, statistics, contextlib
from types import SimpleNamespace
import pytest, torch
from noisekd.core import set_seed
from noisekd.data import get_data, make_dls
from noisekd.models import get_model
from noisekd.attacks import CPU_ROWS
from noisekd.callbacks import Distill, Autocast, is_channels_last
from noisekd.train import FastPath, make_learner, StepLR, lr_at, BF16_ENV
from noisekd.bench import bench, bench_main, plain_loader, plain_train_epoch, plain_accuracy

pytestmark = pytest.mark.trains   # asserts outcomes of training: tools/cpu_matrix.sh runs it under other CPUs

SEEDS, SIZE, EPOCHS, BS, LR, MILESTONES = (0, 1, 2), 16, 5, 32, 0.05, (3, 4)   # 16×16 digits, a WRN-10-1, 5 epochs

@pytest.fixture(autouse=True)
def one_thread():
    "Tiny models run fastest on one thread; on a loaded 2-core machine two OpenMP threads wait on each other (~10× slower)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _plain_run(seed):
    "The reference: torchvision transforms per image in a torch DataLoader, fp32, a plain loop, the same schedule."
    set_seed(seed)
    train, test = get_data('digits', size=SIZE)
    model = get_model('wrn_10_1')
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    for e in range(EPOCHS):
        for g in opt.param_groups: g['lr'] = lr_at(e, MILESTONES, LR)
        plain_train_epoch(model, plain_loader(train, BS, flip=False, seed=seed * 100 + e), opt, 'cpu')
    return plain_accuracy(model, plain_loader(test, 256, train=False), 'cpu')

def _noisekd_run(seed, fast, subset=None):
    "noisekd's path: `make_dls` (resident, channels_last as `fast` says), `make_learner`, the same schedule."
    set_seed(seed)
    train, test = get_data('digits', size=SIZE, subset=subset)
    dls = make_dls(train, test, bs=BS, device='cpu', seed=seed, resident=fast.resident, channels_last=fast.channels_last)
    learn = make_learner(dls, get_model('wrn_10_1'), fast=fast)
    with learn.no_bar(), learn.no_logging(): learn.fit(EPOCHS, LR, cbs=[StepLR(LR, MILESTONES)])
    return 100 * float(learn.recorder.values[-1][2]), learn

def test_fast_data_path_matches_plain_accuracy():
    """noisekd's fast data path (dataset resident on the device, batched crops indexed there, channels_last, fused SGD,
    no syncs: the code a GPU runs, here with device='cpu') reaches the accuracy of the plain torchvision loop.
    Tolerance: the difference of the two means must lie within 4 standard errors of that difference, estimated from
    the seeds' own spread (floor 2 points, for when the seeds happen to agree closely)."""
    fast = FastPath.on(); fast.bf16 = False      # fp32: this compares the data paths
    plain = [_plain_run(s) for s in SEEDS]
    nk = [_noisekd_run(s, fast)[0] for s in SEEDS]
    n = len(SEEDS)
    se = math.sqrt(statistics.variance(plain) / n + statistics.variance(nk) / n)
    tol = max(4 * se, 2.0)
    print(f"plain {plain} (mean {statistics.mean(plain):.2f}), fast {nk} (mean {statistics.mean(nk):.2f}), tolerance {tol:.2f}")
    assert min(plain + nk) > 85, (plain, nk)
    assert abs(statistics.mean(plain) - statistics.mean(nk)) <= tol, (plain, nk, tol)

def test_bf16_autocast_trains_on_cpu():
    "bf16 autocast (forward passes; losses, weights and optimizer in fp32) trains to a reasonable accuracy."
    acc, learn = _noisekd_run(0, FastPath(bf16=True))
    assert acc > 85, acc
    assert {p.dtype for p in learn.model.parameters()} == {torch.float32} and 'forward' not in vars(learn.model)

@pytest.mark.parametrize('feat', [None, 'sp', 'rkd-da'])
def test_inference_mode_teacher_same_loss_and_grads(feat):
    "The teacher under inference_mode gives the student exactly the loss and gradients it gets under no_grad."
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    def step(inference):
        torch.manual_seed(0); s, t = get_model('wrn_10_1'), get_model('wrn_10_1', drop=0.3)
        d = Distill(t, fickle=True, feature_loss=feat)
        d.learn = SimpleNamespace(model=s, cbs=[d], fast=FastPath(inference_teacher=inference)); d.before_fit()
        d.learn.xb = (x,); torch.manual_seed(1); d.before_batch()
        loss = d.lf(s(x), y); loss.backward(); d.after_fit()
        return loss.detach(), [p.grad for p in s.parameters()]
    (l0, g0), (l1, g1) = step(False), step(True)
    assert torch.equal(l0, l1) and all(torch.equal(a, b) for a, b in zip(g0, g1))

def _fast_acc(seed, native):
    "A WRN-10-1's test accuracy with the CPU fast path as 'auto' resolves it on a CPU with (or without) native bf16."
    old = os.environ.get(BF16_ENV); os.environ[BF16_ENV] = '1' if native else '0'
    try: fast = FastPath().resolve('cpu')
    finally:
        if old is None: del os.environ[BF16_ENV]
        else: os.environ[BF16_ENV] = old
    assert fast.bf16 == fast.channels_last == native
    return _noisekd_run(seed, fast, subset=640)[0]   # 640 training images: emulated bf16 (a CPU without it) is slow

def test_cpu_fast_path_matches_fp32_accuracy():
    """The CPU fast path ('auto' on a CPU with native bf16: bf16 autocast, channels_last, inference-mode teacher) reaches the
    accuracy of fp32 ('auto' without native bf16) over 3 seeds each: the difference of the means lies within 4 standard
    errors of that difference, from the seeds' own spread (floor 2 points)."""
    bf, fp = [_fast_acc(s, True) for s in SEEDS], [_fast_acc(s, False) for s in SEEDS]
    n = len(SEEDS); tol = max(4 * math.sqrt(statistics.variance(bf) / n + statistics.variance(fp) / n), 2.0)
    print(f"bf16 {bf} (mean {statistics.mean(bf):.2f}), fp32 {fp} (mean {statistics.mean(fp):.2f}), tolerance {tol:.2f}")
    assert min(bf + fp) > 50, (bf, fp)   # they learn (chance: 10 %); 640 images give 67-77 % here
    assert abs(statistics.mean(bf) - statistics.mean(fp)) <= tol, (bf, fp, tol)

@pytest.mark.parametrize('fickle', [False, True])
def test_kd_loss_bf16_matches_fp32(fickle):
    "The Hinton KD loss with student and teacher under bf16 autocast is fp32 and matches fp32 to bf16's precision (~1%)."
    x, y = torch.rand(64, 3, 16, 16), torch.randint(0, 10, (64,))
    def loss(bf16):
        torch.manual_seed(0); s, t = get_model('wrn_10_1'), get_model('wrn_10_1', drop=0.3)
        for m in (s, t):                                   # trained-looking BN statistics, so logits are not tiny
            for b in m.modules():
                if isinstance(b, torch.nn.BatchNorm2d): b.running_var.fill_(0.5)
        d, ac = Distill(t, fickle=fickle), Autocast()
        d.learn = SimpleNamespace(model=s, cbs=[d] + ([ac] if bf16 else []), fast=FastPath(inference_teacher=True)); d.before_fit()
        d.learn.xb = (x,); torch.manual_seed(1); d.before_batch()
        with (ac.autocast('cpu') if bf16 else contextlib.nullcontext()): pred = s(x)
        return d.lf(pred.float(), y)
    l32, l16 = loss(False).detach(), loss(True).detach()
    assert l16.dtype == torch.float32
    print(f"KD loss fp32 {float(l32):.5f}, bf16 {float(l16):.5f}")
    assert abs(float(l16) - float(l32)) <= 0.02 * float(l32), (float(l16), float(l32))

def test_no_native_bf16_keeps_the_plain_cpu_path(monkeypatch):
    "Without native bf16 (forced), 'auto' leaves CPU training as it was: fp32, NCHW, no autocast callback, no_grad teacher."
    monkeypatch.setenv(BF16_ENV, '0')
    set_seed(0); train, test = get_data('digits', size=SIZE, subset=64, test_subset=32)
    learn = make_learner(make_dls(train, test, bs=BS, device='cpu'), get_model('wrn_10_1'))
    assert learn.fast == FastPath.off() and 'no native bf16' in learn.fast.why
    assert not any(isinstance(c, Autocast) for c in learn.cbs) and not is_channels_last(learn.model)

def test_bench_tiny_cpu(tmp_path, monkeypatch):
    "bench() at a tiny size: the expected rows, positive images/s, ratios computed from them."
    monkeypatch.setenv(BF16_ENV, '0')                  # a CPU without native bf16: 'auto' is fp32, no bf16 PGD row
    df = bench('cpu', n_batches=1, bs=2, size=16, pgd_images=2, steps=2, restarts=2)
    assert list(df.task) == ['KD epoch: hinton', 'KD epoch: ft', 'KD epoch: sr', 'PGD-2×2']
    assert (df.ref_img_s > 0).all() and (df.noisekd_img_s > 0).all()
    assert ((df.ratio - df.noisekd_img_s / df.ref_img_s).abs() < 1e-9).all()
    assert df.attrs['device'] == 'cpu' and not any(df.attrs['fast'].values())   # 'auto' is off on such a CPU
    assert 'no native bf16' in df.attrs['bf16_support']
    assert df.attrs['timing'] == 'best' and df.attrs['pgd_rows_per_pass'] == min(CPU_ROWS, 2 * 2)   # the attack's CPU passes, at most all rows
    out = tmp_path/'bench.md'
    df2 = bench_main(['--device', 'cpu', '--batches', '1', '--bs', '2', '--size', '16', '--methods', 'sr',
                      '--pgd-images', '0', '--out', str(out)])
    assert list(df2.task) == ['KD epoch: sr'] and '| KD epoch: sr | plain PyTorch loop |' in out.read_text()
    png = tmp_path/'bench.png'
    bench_main(['--device', 'cpu', '--batches', '1', '--bs', '2', '--size', '16', '--methods', 'hinton', '--pgd-images', '0', '--out', str(png)])
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
