"End-to-end tests of noisekd.robustness: generated sets in the CIFAR-10-C layout, resume after a kill, evaluation."
import os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, torch, torch.nn as nn
from noisekd.data import ImageArrays, load_cifar10c, load_digits, DIGIT_CLASSES
from noisekd.robustness import (GENERATED_CORRUPTIONS, corrupt, write_corrupted_set, corruption_accuracy, mca,
                                corruption_summary, predict)
from noisekd.core import NoisekdError, temp_file

def _images(size, n, seed=0):
    "n smooth random colour images size×size (uint8 N×3×H×W): blurred noise, so blurs and warps have something to do."
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
    return (x * 255).round().to(torch.uint8)

@pytest.mark.parametrize('size', [16, 32])
def test_generate_round_trip(tmp_path, size, capsys):
    "All 19 corruptions × 5 severities written in the official layout and read back by the data chapter's reader."
    n = 8
    data = ImageArrays(_images(size, n), torch.arange(n) % 10, DIGIT_CLASSES, f'random{size}')
    t = time.time()
    root = write_corrupted_set(data, tmp_path/'c', seed=3, progress=False)
    took = time.time() - t
    with capsys.disabled(): print(f'\n  generated {n} images {size}x{size} x 19 corruptions x 5 severities in {took:.1f}s')
    assert sorted(p.stem for p in root.glob('*.npy')) == sorted(GENERATED_CORRUPTIONS + ['labels'])
    assert np.load(root/'labels.npy').tolist() == np.tile(data.y.numpy(), 5).tolist()
    x_nhwc = data.x.permute(0, 2, 3, 1).numpy()
    for name in GENERATED_CORRUPTIONS:
        a = np.load(root/f'{name}.npy', mmap_mode='r')
        assert a.shape == (5 * n, size, size, 3) and a.dtype == np.uint8
        for s in (1, 3, 5):
            c = load_cifar10c(root, name, s, classes=DIGIT_CLASSES)
            assert torch.equal(c.y, data.y)
            got = c.x.permute(0, 2, 3, 1).numpy()
            assert np.array_equal(got, corrupt(x_nhwc, name, s, seed=3)), (name, s)
            assert (got != x_nhwc).any(), (name, s)

def test_frost_set_added_to_an_old_set(tmp_path):
    "A set generated before frost existed (18 corruptions) gets frost.npy on the next write, so its mCA averages 19."
    data = ImageArrays(_images(16, 4), torch.arange(4), DIGIT_CLASSES, 'random16')
    root = write_corrupted_set(data, tmp_path/'c', [c for c in GENERATED_CORRUPTIONS if c in ('contrast', 'fog')], progress=False)
    assert not (root/'frost.npy').exists()
    write_corrupted_set(data, root, ['contrast', 'fog', 'frost'], progress=False)
    assert np.array_equal(np.load(root/'frost.npy')[4:8], corrupt(data.x, 'frost', 2))

def test_frost_without_imagecorruptions(monkeypatch):
    "Without the package that holds the frost photographs: a clear error naming it, and the other corruptions still work."
    import importlib.util, noisekd.corruptions as R
    R._frost_photos.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'imagecorruptions' else real(name, *a))
    x = _images(16, 2)
    with pytest.raises(NoisekdError, match='pip install imagecorruptions'): corrupt(x, 'frost', 1)
    assert corrupt(x, 'fog', 1).shape == (2, 16, 16, 3)
    monkeypatch.undo(); R._frost_photos.cache_clear()
    assert corrupt(x, 'frost', 1).shape == (2, 16, 16, 3)

NAMES = ['gaussian_noise', 'contrast', 'glass_blur', 'zoom_blur', 'elastic_transform', 'motion_blur', 'snow', 'spatter']   # fast ones first: the kill comes after `contrast`

_CHILD = r'''
import sys, torch
from noisekd.data import ImageArrays, DIGIT_CLASSES
from noisekd.robustness import write_corrupted_set
sys.path.insert(0, {here!r}); from test_robustness import _images, NAMES
data = ImageArrays(_images(32, 120), torch.arange(120) % 10, DIGIT_CLASSES, 'kill')
write_corrupted_set(data, {out!r}, NAMES, progress=False)
'''

def test_resume_after_kill(tmp_path):
    "SIGKILL during generation leaves only complete files; a second run keeps them and makes the rest, identically."
    out = tmp_path/'killed'
    p = subprocess.Popen([sys.executable, '-c', _CHILD.format(here=str(Path(__file__).parent), out=str(out))])
    try:
        t = time.time()
        while not (out/'contrast.npy').exists():
            assert p.poll() is None, 'the generation ended before it could be killed'
            assert time.time() - t < 120, 'no file written in 120 s'
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    done = {f.name: f.stat().st_mtime_ns for f in out.glob('*.npy')}
    assert 'gaussian_noise.npy' in done and 'contrast.npy' in done and 'spatter.npy' not in done
    for f in done: np.load(out/f)                                   # every file that is there is complete
    assert len(list(out.glob('.*.npy.*.tmp'))) <= 1                 # at most the killed writer's half-written file
    live = temp_file(out/'snow.npy')                                # a live writer's (this process)
    data = ImageArrays(_images(32, 120), torch.arange(120) % 10, DIGIT_CLASSES, 'kill')
    write_corrupted_set(data, out, NAMES, progress=False)
    assert {f: (out/f).stat().st_mtime_ns for f in done} == done     # nothing complete was rewritten
    assert list(out.glob('.*.tmp')) == [live]                       # the dead writer's temp is gone, the live one's kept
    ref = write_corrupted_set(data, tmp_path/'fresh', NAMES, progress=False)
    for name in NAMES: assert np.array_equal(np.load(out/f'{name}.npy'), np.load(ref/f'{name}.npy')), name

def test_accuracy_on_generated_set(tmp_path):
    "corruption_accuracy and mca on a generated digits set, for an RGB and a grey (1-channel) model."
    _, test = load_digits(16)
    test = test.subset(range(20))
    root = write_corrupted_set(test, tmp_path/'digits-c', progress=False)
    torch.manual_seed(0)
    for c in (3, 1):
        clean = test if c == 3 else ImageArrays(test.x[:, :1], test.y, test.classes, 'grey')
        model = nn.Sequential(nn.Conv2d(c, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        df = corruption_accuracy(model, clean, root, progress=False)
        assert len(df) == len(GENERATED_CORRUPTIONS) * 5 * 2 and set(df.metric) == {'cond_acc', 'acc'}
        ok = (predict(model, clean.x) == clean.y).float().mean().item() * 100
        assert np.allclose(df.clean_acc, ok)
        r = mca(df)
        assert r['n_corruptions'] == len(GENERATED_CORRUPTIONS) == 19 and 0 <= r['mca_uncond'] <= 100
        assert list(corruption_summary(df).index) == GENERATED_CORRUPTIONS
    with pytest.raises(NoisekdError, match='images per severity'):
        corruption_accuracy(model, clean.subset(range(10)), root, progress=False)
