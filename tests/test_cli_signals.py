"""SIGTERM and SIGINT end a command as the shell expects: one line, exit status 128 + signal,
no stack dump (a sweep's own handling is in test_sweeps_robust.py)."""
import signal
import subprocess
import sys
import time

import pytest

from layrot.cli import main
from layrot.signals import Interrupted, exit_status
from trainables.data import SYSTEM_FASHION_MNIST


def test_exit_status_is_the_shells():
    assert (exit_status(signal.SIGINT), exit_status(signal.SIGTERM)) == (130, 143)


@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_train_ends_on_a_signal_with_one_line_and_the_shells_status(tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-m", "layrot", "train", "--task", "fmnist-quick", "--epochs", "200",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("layrot train: fmnist-quick")
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert err == "layrot train: interrupted\n"


def test_handlers_are_restored_after_a_command(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["tasks"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Interrupted, KeyboardInterrupt)   # code that catches Exception lets it through
