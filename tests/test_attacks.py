"PGD against torchattacks (a test-only dependency), and the Table 4/5 sweeps on a tiny model."
import pytest, torch, torch.nn as nn, torch.nn.functional as F
from noisekd.attacks import PGD, robust_accuracy, pgd_steps_sweep, pgd_eps_sweep, pgd_sweep, TABLE4_STEPS, TABLE5_EPS_255
from noisekd.core import NoisekdError

pytestmark = pytest.mark.trains   # asserts outcomes of training: tools/cpu_matrix.sh runs it under other CPUs

torchattacks = pytest.importorskip('torchattacks')


def _task(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = ((x.flatten(1) - 0.5) @ torch.randn(3*8*8, 10, generator=g)).argmax(1)
    return x, y


@pytest.fixture(scope='module')
def tiny():
    x, y = _task()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
    return net.eval(), x, y


# (eps, alpha, steps, most accuracy the attack may leave): the last two make sure the comparison covers real fooling
@pytest.mark.parametrize('eps,alpha,steps,max_acc', [(8/255, 0.03, 20, 1), (8/255, 2/255, 10, 1), (2/255, 0.03, 5, 1),
                                                     (0.1, 0.01, 7, 0.9), (32/255, 0.03, 20, 0)])
def test_pgd_matches_torchattacks(tiny, eps, alpha, steps, max_acc):
    net, x, y = tiny
    torch.manual_seed(123); ref = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(123); ours = PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    with torch.no_grad():
        acc_ref, acc_ours = (net(ref).argmax(1) == y).float().mean(), (net(ours).argmax(1) == y).float().mean()
    print(f'robust accuracy {float(acc_ours):.3f} (at most {max_acc})')
    assert acc_ours == acc_ref <= max_acc


def test_restart_zero_is_torchattacks(tiny):
    "With restarts stacked restart-major, restart 0 draws the same start as a single-restart attack."
    net, x, y = tiny
    torch.manual_seed(7); ref = torchattacks.PGD(net, eps=8/255, alpha=0.03, steps=5)(x, y)
    torch.manual_seed(7); xs, _ = PGD(net, eps=8/255, alpha=0.03, steps=5, restarts=3).attack(x, y)
    torch.testing.assert_close(xs[0], ref, atol=1e-6, rtol=0)


def test_robust_accuracy_restarts(tiny):
    net, x, y = tiny
    r = robust_accuracy(net, x, y, eps=16/255, steps=5, restarts=4, bs=16, progress=False, seed=0)
    assert len(r['per_restart_acc']) == 4 and r['worst_run_acc'] == min(r['per_restart_acc'])
    assert r['robust_acc'] <= r['worst_run_acc'] <= 100 and r['robust_acc'] <= r['clean_acc']
    r0 = robust_accuracy(net, x, y, eps=0, steps=5, restarts=2, progress=False)
    assert r0['robust_acc'] == r0['clean_acc'] == r['clean_acc']


def test_steps_sweep_rows(tiny):
    net, x, y = tiny
    df = pgd_steps_sweep(net, (x, y), steps=(1, 3, 10), restarts=2, seed=0, label='tiny', progress=False)
    assert len(df) == 3 and list(df.steps) == [1, 3, 10]
    assert {'model', 'attack', 'steps', 'eps', 'eps_255', 'alpha', 'restarts', 'metric', 'value',
            'worst_run_acc', 'clean_acc', 'paper_metric'} <= set(df.columns)
    assert (df.attack == 'pgd').all() and (df.metric == 'robust_acc').all() and (df.model == 'tiny').all()
    assert list(df.paper_metric) == ['pgd1_acc', 'pgd3_acc', 'pgd10_acc']
    assert df.eps.eq(8/255).all() and df.alpha.eq(0.03).all() and df.restarts.eq(2).all()


def test_eps_sweep_monotone(tiny):
    net, x, y = tiny
    df = pgd_eps_sweep(net, (x, y), eps_255=(0, 1, 4, 8, 32, 255), steps=10, restarts=2, seed=0, progress=False)
    assert len(df) == 6 and list(df.eps_255.round(6)) == [0, 1, 4, 8, 32, 255]
    assert df.steps.eq(10).all() and df.alpha.eq(0.03).all()
    print('PGD-10 by eps:', df.value.tolist())
    assert df.value.is_monotonic_decreasing, df.value.tolist()
    assert df.value.iloc[0] == df.clean_acc.iloc[0] and df.value.iloc[-1] == 0
    assert df.paper_metric.iloc[1] == 'pgd10_eps1_acc'


def test_default_grids():
    assert TABLE4_STEPS == (1, 5, 10, 15, 20, 100, 200, 1000)
    assert TABLE5_EPS_255 == (1, 2, 10, 20, 25, 50, 100, 200)


def test_sweep_validation(tiny):
    net, x, y = tiny
    with pytest.raises(NoisekdError, match='steps must be an integer'): pgd_sweep(net, (x, y), steps=[5, 0], progress=False)
    with pytest.raises(NoisekdError, match='eps must satisfy'): pgd_sweep(net, (x, y), eps=-1, progress=False)
    with pytest.raises(NoisekdError, match=r'Images must be in \[0, 1\]'): pgd_sweep(net, (x*3, y), progress=False)
