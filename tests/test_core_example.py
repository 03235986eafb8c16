import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Fashion-MNIST not installed (make setup installs it)")
def test_readme_example_runs_and_prints_rotation_in_forward_order():
    out = subprocess.run([sys.executable, str(ROOT / "examples/layca_own_loop.py"), "--smoke-test"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    epoch = re.search(r"epoch 1: test accuracy ([0-9.]+); rotation ((?:[0-9.]+ ?)+)", out)
    assert epoch, out
    rotation = [float(d) for d in epoch.group(2).split()]
    layers = out.split("layers:")[1].split()
    # fmnist_cnn: five convolutions, then the linear classifier
    assert len(layers) == len(rotation) == 6 and layers[-1].startswith("1.")
    assert all(0 < d < 1 for d in rotation)
    assert float(epoch.group(1)) > 0.1  # above chance after a few dozen steps
