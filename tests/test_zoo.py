"""Any network, end to end: torchvision and timm teachers and students through `noisekd run` (papermill) at the tiny scale,
a tiny `reproduce` on CIFAR-100 (fixture in the official format) with another teacher/student pair, and the report's
RepDistiller table; timm missing is a message naming the extra."""
import sys, json
from pathlib import Path
import pandas as pd, pytest, torch
from conftest import run_noisekd

def test_run_teacher_and_student_with_zoo_archs(tmp_path):
    "A torchvision ResNet-18 teacher with added dropout, then a timm student distilled by AT + Fickle Teacher (default taps), through the notebooks."
    t, s = tmp_path/'teacher', tmp_path/'student'
    run_noisekd('run', 'teacher', '-p', 'arch', 'torchvision:resnet18', '-p', 'p', '0.3', '-p', 'scale', 'tiny', '-p', 'out', t,
                '-p', 'root', tmp_path/'data')
    run_noisekd('run', 'student', '-p', 'arch', 'timm:resnet10t', '-p', 'method', 'at+ft', '-p', 'teacher', t, '-p', 'scale', 'tiny',
                '-p', 'out', s, '-p', 'root', tmp_path/'data')
    rec = pd.read_csv(s/'records.csv')
    assert set(rec.arch) == {'timm:resnet10t'} and set(rec.method) == {'at+ft'} and rec.p.iloc[0] == 0.3 and 'clean_acc' in set(rec.metric)
    from noisekd.train import load_model
    from noisekd.models import dropout_modules
    T, S = load_model(t), load_model(s)                        # rebuilt from the names in their metadata
    assert T.meta['arch'] == 'torchvision:resnet18' and [d.p for d in dropout_modules(T)] == [0.3] * 8
    assert type(S).__module__.startswith('timm') and dropout_modules(S) == []

def test_run_refuses_an_unknown_zoo_model(tmp_path):
    r = run_noisekd('run', 'student', '-p', 'arch', 'torchvision:resnet19', '-p', 'out', tmp_path/'s', check=False)
    assert r.returncode == 2 and "-p arch: torchvision has no classification model 'resnet19'" in r.stderr, r.stderr
    assert not (tmp_path/'s').exists()

def test_reproduce_cifar100_with_another_pair(tmp_path):
    "Table 1 on a CIFAR-100 fixture with a torchvision teacher and a timm student: its own folder, then the report with RepDistiller's numbers."
    from noisekd.data import write_fake_cifar100
    root, runs = tmp_path/'data', tmp_path/'runs'
    write_fake_cifar100(root, n_train=64, n_test=32)
    args = ('reproduce', 'table1', '--dataset', 'cifar100', '--scale', 'tiny', '--seeds', '1', '--runs', runs, '--root', root,
            '--executor', 'inline', '--teacher-arch', 'torchvision:resnet18', '--student-arch', 'timm:resnet10t')
    r = run_noisekd(*args)
    assert "table1 on cifar100 at scale 'tiny@torchvision:resnet18,timm:resnet10t': 8 runs" in r.stdout, r.stdout
    assert '8 run(s) done, 0 already done, 0 failed' in r.stdout, r.stdout[-3000:]
    base = runs/'tiny@torchvision:resnet18,timm:resnet10t'/'cifar100'
    rec = pd.read_csv(base/'students'/'at-c0-T0'/'seed0'/'records.csv')
    assert set(rec.arch) == {'timm:resnet10t'} and {'clean_acc', 'mca'} <= set(rec.metric)
    assert json.loads((base/'teachers'/'p0.3-c0'/'seed0'/'metrics.json').read_text())['meta']['arch'] == 'torchvision:resnet18'
    run_noisekd('report', '--runs', runs)
    md = (runs/'report'/'report.md').read_text()
    assert "RepDistiller's CIFAR-100 numbers" in md and 'teacher torchvision:resnet18, student timm:resnet10t' in md and '75.61' in md
    r = run_noisekd('reproduce', 'table1', '--scale', 'tiny', '--teacher-arch', 'torchvision:resnet19', '--dry-run', check=False)
    assert r.returncode == 2 and "--teacher-arch: torchvision has no classification model 'resnet19'" in r.stderr, r.stderr

def test_timm_missing_names_the_extra(monkeypatch):
    from noisekd.models import get_model
    from noisekd.core import NoisekdError
    monkeypatch.setitem(sys.modules, 'timm', None)             # as if timm were not installed
    with pytest.raises(NoisekdError, match=r'pip install "noisekd\[timm\]"'): get_model('timm:resnet10t')
