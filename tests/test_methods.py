"""The methods learn: on digits, a Hinton-distilled WRN-16-2 and a Fickle-Teacher student (teacher trained with
dropout 0.3) both reach >= 90 % test accuracy. 16×16 images and 10 epochs keep this to about a minute on 2 cores.
Batches of 32: with p = 0.3 dropout and batches of 128 (110 steps) the teacher stays near 50 %, even in a plain PyTorch loop."""
import pytest
from noisekd.train import train_teacher, train_student, load_model

pytestmark = pytest.mark.trains   # asserts outcomes of training: tools/cpu_matrix.sh runs it under other CPUs

@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp('teacher')
    sel = train_teacher(out, 'digits', 'wrn_16_2', drop=0.3, seeds=1, size=16, epochs=10, bs=32, progress=False)
    acc = sel['seeds'][sel['best_seed']]['last_acc']; print(f'teacher: {acc:.2f} %')   # the margin, in the matrix's logs
    assert acc >= 90
    return sel['best_path']

@pytest.mark.parametrize('method', ['hinton', 'ft'])
def test_student_reaches_90(tmp_path, teacher, method):
    rec = train_student(tmp_path/method, 'digits', 'wrn_16_2', method=method, teacher=teacher, size=16, epochs=10, bs=32, progress=False)
    print(f"{method} student: {rec['last_acc']:.2f} %")
    assert rec['last_acc'] >= 90, rec['history']
    assert rec['meta']['method'] == method and load_model(tmp_path/method).meta['drop'] == 0   # the student has no dropout
