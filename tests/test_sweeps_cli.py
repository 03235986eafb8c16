import subprocess
import sys

import pytest

from layrot.cli import main


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tasks: [nope]\noptimizers: [sgd]\n", "tasks: unknown task 'nope'"),
        ("tasks: [C10-CNN1]\noptimizers: [sgd]\nalpha: [2]\n", "alpha: alpha=2 is outside [-1, 1]"),
        ("tasks: [C10-CNN1]\noptimizers: [sgd]\nrho0: [0]\n", "rho0: rho0=0.0 must be a finite number > 0"),
        ("tasks: [C10-CNN1]\noptimizers: []\n", "optimizers: the grid is empty"),
        ("tasks: [C10-CNN1]\noptimizer: [sgd]\n", "optimizer: unknown key (did you mean 'optimizers'?)"),
    ],
)
def test_invalid_spec_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, spec, message):
    path = tmp_path / "bad.yaml"
    path.write_text(spec)
    store = tmp_path / "store"
    assert main(["sweep", str(path), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"layrot sweep: error: {path}: {message}")
    assert err.count("\n") == 1
    assert not store.exists()


def test_missing_spec_file(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.yaml"), "--store", str(tmp_path / "s")]) == 2
    assert "spec file" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_rejecting_a_spec_does_not_import_ray(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tasks: [nope]\noptimizers: [sgd]\n")
    code = (
        "import sys; from layrot.cli import main;"
        f"rc = main(['sweep', {str(path)!r}, '--store', {str(tmp_path / 's')!r}]);"
        "print(rc, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]
