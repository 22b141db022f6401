"Shared fixtures: tiny datasets in the real on-disk formats, and a way to run the `noisekd` command."
import os, sys, subprocess, collections
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def fake_data(tmp_path_factory):
    "A data root holding tiny CIFAR-10, SVHN, CINIC-10 and CIFAR-10-C fixtures."
    from noisekd.data import write_fake_cifar10, write_fake_svhn, write_fake_cinic, write_fake_cifar10c
    root = tmp_path_factory.mktemp('data')
    write_fake_cifar10(root, n_train=60, n_test=20)
    write_fake_svhn(root, n_train=60, n_test=20)
    for split in ('train', 'valid', 'test'): write_fake_cinic(root, n_imagenet=3, n_cifar=1, split=split)  # whole, as `data check` wants
    write_fake_cifar10c(root, n=20)
    return root

def run_noisekd(*args, cwd=None, env=None, timeout=600, check=True):
    "Run the `noisekd` console script as a user would; returns the CompletedProcess."
    e = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    r = subprocess.run([sys.executable, '-m', 'noisekd.cli', *map(str, args)], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"noisekd {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r

TALLY = collections.Counter()   # fault injection: cases tried, rejected cleanly, kills survived, runs lost

def pytest_terminal_summary(terminalreporter):
    if TALLY:
        terminalreporter.write_sep('-', 'fault injection')
        terminalreporter.write_line(f"{TALLY['cases tried']} bad-input cases tried, {TALLY['rejected cleanly']} rejected cleanly; "
                                    f"{TALLY['kills']} kills (SIGKILL) survived; runs lost: {TALLY['runs lost']}")
        if TALLY['fuzz cases tried']:
            terminalreporter.write_line(f"fuzzing: {TALLY['fuzz cases tried']} generated bad command lines tried, {TALLY['fuzz refused cleanly']} "
                                        "refused cleanly (exit 2, one error line naming the option, no traceback, nothing written)")
