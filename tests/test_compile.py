"""`FastPath(compile=True)`: one epoch of every method compiled gives the records it gives uncompiled. On a CPU the tests
use torch.compile's `eager` and `aot_eager` backends (TorchDynamo's capture and AOTAutograd, without inductor's C++
build, ~70 s a model on 2 cores); NOISEKD_TEST_INDUCTOR=1 adds inductor."""
import os, math
import pytest, torch
from noisekd.train import train_teacher, train_student, make_learner, FastPath
from noisekd.callbacks import Distill
from noisekd.data import get_data, make_dls
from noisekd.models import get_model

pytestmark = pytest.mark.trains   # compiled and eager records must agree on any CPU: tools/cpu_matrix.sh runs it under others

KW = dict(size=16, epochs=1, subset=128, test_subset=64, bs=32, progress=False, device='cpu')
METHODS = {'baseline': {}, 'hinton': {}, 'ft': {}, 'sr': dict(sigma=0.05), 'ga': dict(sigma=0.05), 'mc': dict(rate=0.1), 'at': {}}
TEACHERLESS = ('baseline', 'ga')

@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp('t'), 'digits', 'wrn_10_1', drop=0.3, seeds=1, **KW)['best_path']

def _epoch(out, method, teacher, **fast):
    r = train_student(out, 'digits', 'wrn_10_1', method=method, params=METHODS[method],
                      teacher=None if method in TEACHERLESS else teacher, fast=fast, **KW)
    (h,) = r['history']
    return h['train_loss'], h['valid_loss'], h['acc']

@pytest.mark.parametrize('method', list(METHODS))
def test_compiled_epoch_gives_the_same_records(tmp_path, teacher, method):
    plain = _epoch(tmp_path/'plain', method, teacher, compile=False)
    comp = _epoch(tmp_path/'eager', method, teacher, compile=True, backend='eager')
    assert comp == pytest.approx(plain, rel=1e-5, abs=1e-6), (plain, comp)

def test_aot_eager_gives_the_same_records(tmp_path, teacher):
    plain = _epoch(tmp_path/'plain', 'hinton', teacher, compile=False)
    assert _epoch(tmp_path/'aot', 'hinton', teacher, compile=True, backend='aot_eager') == pytest.approx(plain, rel=1e-5, abs=1e-6)

@pytest.mark.skipif(os.environ.get('NOISEKD_TEST_INDUCTOR') != '1',
                    reason="inductor builds C++ (~70 s a model on 2 cores): set NOISEKD_TEST_INDUCTOR=1 to run it")
def test_inductor_gives_close_records(tmp_path, teacher):
    plain = _epoch(tmp_path/'plain', 'baseline', teacher, compile=False)
    assert _epoch(tmp_path/'ind', 'baseline', teacher, compile=True, backend='inductor') == pytest.approx(plain, rel=1e-3, abs=1e-3)

@pytest.mark.parametrize('fickle', [False, True])
def test_which_models_are_compiled(fickle):
    """The student is compiled; the teacher too, except a Fickle Teacher (its masks draw from the run's dropout stream, a
    generator torch.compile cannot trace: a graph break at every dropout module) and a feature-KD pair (hooks)."""
    train, test = get_data('digits', size=8, subset=32, test_subset=16)
    s, t = get_model('wrn_10_1'), get_model('wrn_10_1', drop=0.3)
    learn = make_learner(make_dls(train, test, bs=16, device='cpu'), s, cbs=[Distill(t, fickle=fickle)],
                         fast=FastPath(compile=True, backend='eager', bf16=False))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.01)
    assert getattr(s, '_compiled_call_impl', None) is not None
    assert (getattr(t, '_compiled_call_impl', None) is None) == fickle
    assert 'compile (eager)' in learn.fast.summary()

def test_feature_taps_are_not_compiled_and_say_so():
    train, test = get_data('digits', size=8, subset=32, test_subset=16)
    s, t = get_model('wrn_10_1'), get_model('wrn_10_1')
    learn = make_learner(make_dls(train, test, bs=16, device='cpu'), s, cbs=[Distill(t, feature_loss='at')],
                         fast=FastPath(compile=True, backend='eager'))
    assert learn.fast.compile is False and 'not compiled: feature taps read the student through hooks' in learn.fast.summary()
    assert getattr(s, '_compiled_call_impl', None) is None
