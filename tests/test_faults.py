"""Fault injection: every bad input is refused before any work starts, with one message that says what was wrong
and what to do (NoisekdError in Python; exit status 2 and the message on stderr, no traceback, on the command
line). The list of cases is also the documentation's table (nbs/12_reliability.ipynb checks they agree)."""
import pickle, shutil, numpy as np, torch, pytest
from pathlib import Path
from conftest import ROOT, TALLY, run_noisekd
from noisekd.all import *

def _teacher(tmp, n_classes=10, drop=0.):
    return get_model('wrn_10_1', n_classes=n_classes, drop=drop)

def _trained(tmp):
    out = tmp/'trained'
    if not (out/'model.pth').exists():
        train_model(out, 'digits', 'wrn_10_1', size=8, epochs=1, subset=64, test_subset=32, bs=32, progress=False)
    return out

def _broken_cifar(tmp, fake, how):
    root = tmp/'cif'; shutil.copytree(fake/'cifar-10-batches-py', root/'cifar-10-batches-py')
    f = root/'cifar-10-batches-py'/'data_batch_2'
    if how == 'missing': f.unlink()
    elif how == 'truncated': f.write_bytes(f.read_bytes()[:100])
    elif how == 'checksum': (root/'cifar-10-batches-py'/SYNTHETIC).unlink()
    elif how == 'labels':
        d = pickle.load(open(f, 'rb'), encoding='latin1'); d['labels'][0] = 12; pickle.dump(d, open(f, 'wb'))
    return root

def _broken_c(tmp, fake):
    root = tmp/'c'; shutil.copytree(fake/'CIFAR-10-C', root/'CIFAR-10-C')
    f = root/'CIFAR-10-C'/'contrast.npy'; f.write_bytes(f.read_bytes()[:200]); return root

# (id, what the user did wrong, call, expected part of the message); each call gets (tmp, fake_data)
CASES = [
    ('dataset-unknown', 'unknown dataset name', lambda t, f: get_data('cifar'), "Did you mean 'cifar10'"),
    ('method-unknown', 'unknown method name', lambda t, f: method_callbacks('hintn', _teacher(t)), "Did you mean 'hinton'"),
    ('addon-unknown', 'unknown add-on', lambda t, f: method_callbacks('at+fft', _teacher(t)), "Did you mean 'ft'"),
    ('table-unknown', 'unknown table name', lambda t, f: plan('tabel1'), "Did you mean 'table1'"),
    ('scale-unknown', 'unknown scale', lambda t, f: plan('table1', scale='smal'), "Did you mean 'small'"),
    ('arch-unknown', 'unknown architecture', lambda t, f: get_model('resnet18'), "use 'wrn_<depth>_<k>'"),
    ('wrn-depth', 'WRN depth not 6n+4', lambda t, f: get_model('wrn_15_2'), 'depth must be 6n+4'),
    ('sigma-negative', 'σ < 0', lambda t, f: method_callbacks('sr', _teacher(t), sigma=-0.1), 'sigma must satisfy 0 <= sigma'),
    ('sigma-missing', 'SR without σ', lambda t, f: method_callbacks('sr', _teacher(t)), 'needs the noise level sigma'),
    ('mc-rate', 'MC rate outside [0, 1]', lambda t, f: MessyCollaboration(1.5), 'MC rate r must satisfy 0 <= MC rate r <= 1'),
    ('label-noise', 'label corruption rate outside [0, 1]', lambda t, f: get_data('digits', label_noise=-0.1), 'label corruption rate must satisfy'),
    ('dropout-one', 'dropout p >= 1', lambda t, f: wrn_40_2(drop=1.0), 'dropout p must satisfy 0 <= dropout p < 1'),
    ('epochs-zero', 'epochs <= 0', lambda t, f: get_schedule(epochs=0), 'epochs must be a positive integer'),
    ('seeds-zero', 'no seeds', lambda t, f: plan('table1', seeds=0), 'seeds must be a positive integer'),
    ('batch-size', 'batch size 0', lambda t, f: make_dls(*get_data('digits', size=8, subset=40), bs=0), 'bs (batch size) must be a positive integer'),
    ('fickle-no-dropout', 'a Fickle Teacher without dropout', lambda t, f: method_callbacks('ft', _teacher(t)), 'needs a teacher trained with dropout'),
    ('class-mismatch', 'teacher and student class counts differ', lambda t, f: method_callbacks('hinton', _teacher(t, 7), n_classes=10), 'teacher predicts 7 classes but the data has 10'),
    ('teacher-missing', 'a teacher method without a teacher', lambda t, f: method_callbacks('hinton'), 'distills from a teacher'),
    ('ga-with-teacher', 'GA combined with a teacher', lambda t, f: method_callbacks('ga+ft', sigma=0.1), 'takes no add-ons'),
    ('cifar-missing', 'missing dataset folder', lambda t, f: load_cifar10(t/'nowhere'), 'Pass download=True'),
    ('cifar-partial', 'partial dataset folder (a batch missing)', lambda t, f: load_cifar10(_broken_cifar(t, f, 'missing')), 'missing file'),
    ('cifar-truncated', 'truncated data file', lambda t, f: load_cifar10(_broken_cifar(t, f, 'truncated'), checksums=False), 'cannot read'),
    ('cifar-checksum', 'file not matching the published checksum', lambda t, f: load_cifar10(_broken_cifar(t, f, 'checksum')), 'does not match its published MD5'),
    ('labels-range', 'labels out of range', lambda t, f: load_cifar10(_broken_cifar(t, f, 'labels'), checksums=False), 'labels must lie in 0..9'),
    ('svhn-missing', 'missing SVHN file', lambda t, f: load_svhn(t/'nowhere'), 'SVHN not found'),
    ('cinic-missing', 'missing CINIC-10 folder', lambda t, f: load_cinic_ood(t/'nowhere'), 'CINIC-10 not found'),
    ('cinic-too-few', 'asking more CINIC images per class than exist', lambda t, f: load_cinic_ood(f, per_class=50), 'fewer than per_class=50'),
    ('cifar10c-missing', 'missing CIFAR-10-C', lambda t, f: load_cifar10c(t/'nowhere'), 'CIFAR-10-C not found'),
    ('cifar10c-truncated', 'truncated CIFAR-10-C file', lambda t, f: load_cifar10c(_broken_c(t, f), 'contrast', 1), 'truncated or corrupt'),
    ('image-dtype', 'images not uint8 N×C×H×W', lambda t, f: ImageArrays(torch.rand(2, 3, 8, 8), [0, 1], DIGIT_CLASSES), 'expected uint8 images'),
    ('image-range', 'attack inputs outside [0, 1]', lambda t, f: robust_accuracy(_teacher(t), torch.rand(2, 3, 8, 8) * 255, torch.tensor([0, 1])), 'Images must be in [0, 1]'),
    ('eps-negative', 'attack ε < 0', lambda t, f: PGD(_teacher(t), eps=-0.1), 'eps must satisfy 0 <= eps'),
    ('eval-unknown', 'unknown evaluation', lambda t, f: evaluate(_teacher(t), 'digits', ['pgd']), "Unknown evaluation 'pgd'"),
    ('ood-not-cifar', 'OOD evaluation of a non-CIFAR model', lambda t, f: evaluate(_teacher(t), 'digits', ['ood']), 'OOD evaluation (CINIC-10) is for CIFAR-10'),
    ('model-missing', 'a model path with nothing there', lambda t, f: load_model(t/'nothing'), 'No trained model'),
    ('model-other-arch', 'a checkpoint of another architecture', lambda t, f: load_model(_trained(t), expect=dict(arch='wrn_40_2')), "has arch='wrn_10_1', but 'wrn_40_2'"),
    ('model-corrupt', 'a corrupt model file', lambda t, f: (t/'bad.pth').write_bytes(b'junk') and load_model(t/'bad.pth'), 'is corrupt or not a noisekd model'),
    ('checkpoint-foreign', "another run's checkpoint in the run folder", lambda t, f: ((t/'ck').mkdir(),
        torch.save(dict(meta='{"seed": 99}', model={}, opt={}), t/'ck'/'checkpoint.pth'),
        train_model(t/'ck', 'digits', 'wrn_10_1', size=8, epochs=1, subset=32, progress=False)), 'belongs to a different run'),
    ('runs-unwritable', 'a runs folder that is not writable', lambda t, f: execute([], '/proc/noisekd-runs'), 'Cannot write into the run folder'),
    ('corruption-unknown', 'unknown corruption name', lambda t, f: corrupt(np.zeros((1, 8, 8, 3), np.uint8), 'blur', 1), "Did you mean"),
    ('severity-range', 'corruption severity outside 1..5', lambda t, f: corrupt(np.zeros((1, 8, 8, 3), np.uint8), 'fog', 6), 'severity must be an integer 1..5'),
    ('report-empty', 'a report of a folder without runs', lambda t, f: write_report(t), 'No records under'),
    ('notebook-param', 'a notebook parameter that is out of range', lambda t, f: student_config(t/'s', method='ga', sigma=-1), 'sigma must satisfy'),
]

@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(case, tmp_path, fake_data):
    cid, what, call, expect = case
    TALLY['cases tried'] += 1
    with pytest.raises(NoisekdError) as e: call(tmp_path, fake_data)
    assert expect in str(e.value), f'{cid}: {e.value}'
    shown = _documented().get(cid)       # the reliability chapter shows this message's start as it is
    if shown is not None:
        start = shown.split('…')[0].rstrip().rstrip('.')
        assert str(e.value).startswith(start), f"nbs/12_reliability.ipynb shows for {cid}: {shown!r}\nbut the message is: {e.value}"
    TALLY['rejected cleanly'] += 1

def _documented() -> dict:
    "{case: message shown} from the reliability chapter's table of refused inputs."
    import json, re
    nb = json.loads((ROOT/'nbs'/'12_reliability.ipynb').read_text())
    text = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'^\| `([\w-]+)` \|[^|]*\| (.*) \|$', text, re.M)}

CLI_CASES = [
    ('cli-table', ['reproduce', 'tabel1'], "Unknown table 'tabel1'. Did you mean 'table1'"),
    ('cli-dataset', ['reproduce', 'table1', '--dataset', 'cifar', '--dry-run'], "Did you mean 'cifar10'"),
    ('cli-seeds', ['reproduce', 'table1', '--seeds', '0', '--dry-run'], '--seeds must be an integer >= 1, got 0'),
    ('cli-scale', ['reproduce', 'table1', '--scale', 'huge', '--dry-run'], "Unknown scale 'huge'"),
    ('cli-notebook', ['run', 'studnet'], "Did you mean 'student'"),
    ('cli-param-name', ['run', 'student', '-p', 'sigmaa', '0.1'], "Unknown parameter(s) ['sigmaa']"),
    ('cli-param-value', ['run', 'student', '-p', 'method', 'mc', '-p', 'rate', '2', '-p', 'teacher', 'x', '-p', 'out', 'OUT'], 'MC rate r must satisfy 0 <= MC rate r <= 1, got 2'),
    ('cli-device', ['reproduce', 'table1', '--scale', 'tiny', '--device', 'cuda:7', '--runs', 'OUT'], '--device: Device'),
    ('cli-report', ['report', '--runs', 'OUT'], 'No records under'),
    ('cli-runs-unwritable', ['reproduce', 'table1', '--scale', 'tiny', '--runs', '/proc/noisekd-runs'], '--runs /proc/noisekd-runs: cannot write into /proc'),
]

@pytest.mark.parametrize('case', CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exits_with_a_message(case, tmp_path):
    cid, args, expect = case
    TALLY['cases tried'] += 1
    r = run_noisekd(*[str(tmp_path/'out') if a == 'OUT' else a for a in args], check=False, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert expect in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'out'/'model.pth').exists()
    TALLY['rejected cleanly'] += 1

def test_cases_are_documented():
    "The documentation's table of refused inputs lists exactly these cases."
    import json
    nb = json.loads((ROOT/'nbs'/'12_reliability.ipynb').read_text())
    text = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    ids = {c[0] for c in CASES} | {c[0] for c in CLI_CASES}
    missing = sorted(i for i in ids if f'`{i}`' not in text)
    assert not missing, f'cases missing from nbs/12_reliability.ipynb: {missing}'
