"""Getting data with no internet: a loopback HTTP server (127.0.0.1, with Range requests) serves tiny archives in each
dataset's official format; `noisekd data get --mirror` fetches, checks and unpacks them, the loaders read the result,
a wrong checksum leaves nothing, a killed download resumes, `data check` tells found / missing / damaged, and
`reproduce` checks its data before its first run. Fashion-MNIST: fixtures, Debian's real files, a tiny reproduce."""
import os, sys, signal, subprocess, threading, functools, time, http.server
from pathlib import Path
import pytest, torch
from conftest import ROOT
import noisekd.download as dl
import noisekd.data as nd
from noisekd.cli import main
from noisekd.data import *

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    "Serves a folder like the publishers' servers do: `Range: bytes=N-` gets 206 and the rest; `delay` slows each 4 kB."
    asked, delay = [], 0.
    def log_message(self, *a): pass
    def do_GET(self):
        f = Path(self.directory)/self.path.lstrip('/')
        if not f.is_file(): return self.send_error(404)
        b, rng = f.read_bytes(), self.headers.get('Range')
        start = int(rng[6:].split('-')[0]) if rng else 0
        RangeHandler.asked.append((f.name, start))
        if rng and start >= len(b): return self.send_error(416)
        self.send_response(206 if rng else 200)
        if rng: self.send_header('Content-Range', f'bytes {start}-{len(b)-1}/{len(b)}')
        self.send_header('Content-Length', str(len(b) - start)); self.end_headers()
        try:
            for i in range(start, len(b), 4096):
                self.wfile.write(b[i:i+4096]); time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError): pass

@pytest.fixture(scope='module')
def mirror(tmp_path_factory):
    "(url, md5s, folder): the fixture archives behind a loopback server."
    folder = tmp_path_factory.mktemp('mirror')
    md5s = nd.write_fake_archives(folder, n=8)
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(RangeHandler, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}', md5s, folder
    srv.shutdown()

@pytest.fixture
def fixtures_published(mirror, monkeypatch, tmp_path):
    "The command line sees the fixtures' checksums as the published ones, and no Debian Fashion-MNIST."
    monkeypatch.setattr(dl, 'SOURCES', dl.sources_with(mirror[1]))
    monkeypatch.setattr(dl, 'DEBIAN_FASHION', tmp_path/'no-debian')
    monkeypatch.delenv('NOISEKD_DATA', raising=False); monkeypatch.delenv('NOISEKD_MIRROR', raising=False)
    return mirror

def _main(argv, capsys):
    try: main([str(a) for a in argv]); code = 0
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err

def test_data_get_all_through_a_mirror(fixtures_published, tmp_path, capsys):
    url, md5s, _ = fixtures_published
    root = tmp_path/'data'
    code, out, err = _main(['data', 'get', 'all', '--root', root, '--mirror', url], capsys)
    assert code == 0, err
    for name in dl.SOURCES: assert f'{name}: ready in' in out, out
    assert sorted(p.name for p in root.iterdir()) == ['CIFAR-10-C', 'CIFAR-100-C', 'cifar-10-batches-py', 'cifar-100-python', 'cinic-10',
                                                      'fashion-mnist', 'test_32x32.mat', 'train_32x32.mat']      # no archive, no temporary folder
    tr, te = get_data('cifar10', root)
    assert (len(tr), len(te), tr.x.shape[1:]) == (8, 8, (3, 32, 32))
    assert load_cinic_ood(root, per_class=2).x.shape == (20, 3, 32, 32)
    assert load_cifar10c(root, 'saturate', 2).x.shape == (8, 3, 32, 32)
    assert len(load_svhn(root, 'train', checksums=False)) == 8          # fixtures: not the published bytes
    assert load_fashion_mnist(root, checksums=False).x.shape == (8, 1, 28, 28)
    code, out, _ = _main(['data', 'check', '--root', root], capsys)
    assert code == 0 and out.count(' found ') == 7, out
    code, out, _ = _main(['data', 'get', 'cifar10', '--root', root, '--mirror', url], capsys)
    assert code == 0 and 'cifar10: already there' in out

def test_data_get_cifar100_through_a_mirror(fixtures_published, tmp_path, capsys):
    "CIFAR-100 and CIFAR-100-C: fetched from the loopback mirror, checked, read by the loaders; mCA on a CIFAR-100-C made by the generator."
    url, md5s, _ = fixtures_published
    root = tmp_path/'data'
    code, _, err = _main(['reproduce', 'table1', '--dataset', 'cifar100', '--runs', tmp_path/'runs', '--root', root], capsys)
    assert code == 2 and 'noisekd data get cifar100 cifar100c --root' in err, err      # the preflight names both, before any run
    code, out, err = _main(['data', 'get', 'cifar100', 'cifar100c', '--root', root, '--mirror', url], capsys)
    assert code == 0 and 'cifar100: ready in' in out and 'cifar100c: ready in' in out, err
    assert sorted(p.name for p in root.iterdir()) == ['CIFAR-100-C', 'cifar-100-python']
    code, out, _ = _main(['data', 'check', 'cifar100', 'cifar100c', '--root', root], capsys)
    assert code == 0 and out.count(' found ') == 2, out
    dl.preflight_data({'cifar100': 'training and test images', 'cifar100c': 'mCA'}, root, log=lambda *a: None)
    tr, te = get_data('cifar100', root)
    assert (len(tr), len(te), tr.c, tr.classes[-1]) == (8, 8, 100, 'worm')
    a = load_cifar100c(root, 'saturate', 2); assert (a.x.shape, a.c) == ((8, 3, 32, 32), 100)
    from noisekd.models import get_model
    from noisekd.robustness import write_corrupted_set, corruption_accuracy, mca
    gen = write_corrupted_set(te, root/'CIFAR-100-C-gen', corruptions=['contrast', 'fog'], progress=False)
    m = mca(corruption_accuracy(get_model('torchvision:resnet18', 100), te, gen, progress=False))
    assert m['n_corruptions'] == 2 and 0 <= m['mca_uncond'] <= 100

def test_wrong_checksum_is_refused_and_leaves_nothing(mirror, monkeypatch, tmp_path, capsys):
    url, md5s, _ = mirror
    monkeypatch.setattr(dl, 'SOURCES', dl.sources_with({**md5s, 'cifar-10-python.tar.gz': 'f' * 32}))
    root = tmp_path/'data'
    code, _, err = _main(['data', 'get', 'cifar10', '--root', root, '--mirror', url], capsys)
    assert code == 2 and 'Traceback' not in err
    assert f"cifar-10-python.tar.gz: checksum mismatch: expected MD5 {'f' * 32}, got {md5s['cifar-10-python.tar.gz']}" in err, err
    assert [p for p in root.rglob('*') if p.is_file()] == []                       # no archive, no .part, nothing unpacked
    assert not (root/'cifar-10-batches-py').exists()

def test_killed_download_resumes(tmp_path):
    "A download killed (SIGKILL) half-way completes on the next call, with one request for the rest."
    folder = tmp_path/'mirror'; md5s = nd.write_fake_archives(folder, ['svhn'], n=400)   # train_32x32.mat: 1.2 MB
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(RangeHandler, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url, root = f'http://127.0.0.1:{srv.server_port}', tmp_path/'data'
    part = root/dl.DOWNLOADS/'train_32x32.mat.part'; size = (folder/'train_32x32.mat').stat().st_size
    RangeHandler.delay, RangeHandler.asked = 0.01, []
    code = ("import sys, noisekd.download as d; d.download_dataset('svhn', sys.argv[1], sys.argv[2], "
            f"{md5s!r}, progress=False)")
    p = subprocess.Popen([sys.executable, '-c', code, str(root), url], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        t0 = time.time()
        while not (part.is_file() and part.stat().st_size > size // 4):
            assert p.poll() is None and time.time() - t0 < 300, 'the download never started'
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL); p.wait()
    finally:
        if p.poll() is None: p.kill()
    have = part.stat().st_size
    assert 0 < have < size and not (root/'train_32x32.mat').exists()
    RangeHandler.delay = 0.
    dl.download_dataset('svhn', root, url, md5s, progress=False, log=lambda *a: None)
    srv.shutdown()
    assert ('train_32x32.mat', have) in RangeHandler.asked, RangeHandler.asked           # asked for the rest only
    assert len(load_svhn(root, 'train', checksums=False)) == 400
    assert not (root/dl.DOWNLOADS).exists()

def test_data_check_found_missing_damaged(fixtures_published, tmp_path, capsys, monkeypatch):
    url, md5s, _ = fixtures_published
    root = tmp_path/'data'
    monkeypatch.setenv('NOISEKD_MIRROR', url)                                         # the mirror from the environment
    dl.data_get(['cifar10', 'cinic10', 'cifar10c'], root, progress=False, log=lambda *a: None)
    (root/'cinic-10'/'test'/'dog').rename(root/'cinic-10'/'test'/'dgo')
    code, out, _ = _main(['data', 'check', 'cifar10', 'cinic10', 'cifar10c', 'svhn', '--root', root], capsys)
    assert code == 1
    lines = {l.split()[0]: l for l in out.splitlines() if l and not l.startswith(' ')}
    assert lines['cifar10c'].split()[1] == 'found' and str(root/'CIFAR-10-C') in lines['cifar10c']
    assert lines['cinic10'].split()[1] == 'damaged' and 'test/dog/ is missing' in out
    assert lines['svhn'].split()[1] == 'missing' and f'fix: noisekd data get svhn --root {root}' in out
    (root/'cifar-10-batches-py'/nd.SYNTHETIC).unlink()                                  # now the published MD5s apply
    assert dl.dataset_status('cifar10', root).state == 'damaged'
    assert 'data_batch_1 does not match its MD5' in dl.dataset_status('cifar10', root).problem
    code, out, _ = _main(['data', 'check', 'cifar10c', '--root', root], capsys)
    assert code == 0

@pytest.mark.skipif(not nd.DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_data_check_names_debians_fashion_mnist(tmp_path, capsys):
    code, out, _ = _main(['data', 'check', 'fashion-mnist', '--root', tmp_path], capsys)
    assert code == 0 and "found" in out and "/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)" in out, out
    code, out, _ = _main(['data', 'get', 'fashion-mnist', '--root', tmp_path], capsys)
    assert code == 0 and 'already there: /usr/share/datasets/fashion-mnist' in out and not any(tmp_path.iterdir())

def test_reproduce_checks_data_before_the_first_run(fixtures_published, tmp_path, capsys):
    url = fixtures_published[0]
    runs, root = tmp_path/'runs', tmp_path/'data'
    args = ['reproduce', 'table3', '--dataset', 'cifar10', '--scale', 'tiny', '--seeds', '1', '--runs', runs, '--root', root,
            '--executor', 'inline']
    code, out, err = _main(args, capsys)
    assert code == 2 and 'Traceback' not in err, err
    assert f'noisekd data get cifar10 cinic10 --root {root}' in err and len(err.strip().splitlines()) == 1, err   # one error line (the CLI's rule)
    assert 'cinic10: missing' in err and 'needed for OOD accuracy' in err
    assert not runs.exists() and not root.exists()
    code, out, err = _main(args + ['--download', '--mirror', url], capsys)
    assert code == 0, err[-3000:]
    assert '4 run(s) done, 0 already done, 0 failed' in out, out[-2000:]
    recs = list(runs.rglob('records.csv'))
    assert any('ood_cinic_acc' in r.read_text() for r in recs)

def test_run_checks_data_first(fixtures_published, tmp_path, capsys):
    code, _, err = _main(['run', 'student', '-p', 'dataset', 'svhn', '-p', 'scale', 'tiny', '-p', 'root', tmp_path/'data',
                          '-p', 'out', tmp_path/'s'], capsys)
    assert code == 2 and f'noisekd data get svhn --root {tmp_path/"data"}' in err, err
    assert not (tmp_path/'s').exists()

def test_fashion_mnist_fixture_and_tiny_reproduce(tmp_path, capsys):
    "Fixture idx files under a data root are read, and a tiny reproduce runs on them through the paths digits takes."
    root = tmp_path/'data'; write_fake_fashion_mnist(root, 64, 32)
    tr, te = get_data('fashion-mnist', root)
    assert (len(tr), len(te), tr.x.shape[1:], tr.classes[9]) == (64, 32, (1, 28, 28), 'Ankle boot')
    code, out, err = _main(['reproduce', 'table1', '--dataset', 'fashion-mnist', '--scale', 'tiny', '--seeds', '1',
                            '--runs', tmp_path/'runs', '--root', root, '--executor', 'inline'], capsys)
    assert code == 0, err[-3000:]
    assert 'data: fashion-mnist found in' in out and ', 0 failed' in out, out[-2000:]
    assert list((tmp_path/'runs'/'tiny'/'fashion-mnist'/'students').glob('*/seed0/evals/corruptions.csv'))

@pytest.mark.skipif(not nd.DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_files(tmp_path):
    "Debian's files: 70,000 images of 28×28, ten classes of 6,000 (train) and 1,000 (test) each, as published."
    tr, te = get_data('fashion-mnist', tmp_path/'empty')
    assert (len(tr), len(te), tr.x.shape[1:], tr.x.dtype) == (60000, 10000, (1, 28, 28), torch.uint8)
    assert torch.bincount(tr.y).tolist() == [6000] * 10 and torch.bincount(te.y).tolist() == [1000] * 10
    assert dl.dataset_status('fashion-mnist', tmp_path/'empty').ok
