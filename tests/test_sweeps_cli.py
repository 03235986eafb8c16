import subprocess
import sys

import pytest

from layrot.cli import main


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tasks: [nope]\nsettings: [sgd]\n", "tasks: task='nope' is not allowed"),
        ("tasks: [C10-CNN1]\nsettings: [sgd]\nalpha: [2]\n", "alpha: alpha=2 is not allowed: a number in [-1, 1]"),
        ("tasks: [C10-CNN1]\nsettings: [sgd]\nrho0: [0]\n", "rho0: rho0=0.0 is not allowed: a finite number > 0"),
        ("tasks: [C10-CNN1]\nsettings: []\n", "settings: the grid is empty"),
        ("tasks: [C10-CNN1]\nsetting: [sgd]\n", "setting: unknown key (did you mean 'settings'?)"),
        ("tasks: [fmnist]\nsettings: [layca-sgd]\nalpha: [yes]\n", "alpha: alpha=True is not allowed"),
        ("tasks: [fmnist]\nsettings: [layca-sgd]\nepochs: on\n", "epochs: epochs=True is not allowed"),
        ("tasks: [fmnist]\nsettings: [layca-sgd]\nrho0: [\"0.1\"]\n", "rho0: '0.1' is not a rate"),
        ("tasks: [fmnist]\nsettings: [sgd+layca]\n", "settings: setting='sgd+layca' is not allowed: write 'layca-sgd'"),
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
    path.write_text("tasks: [nope]\nsettings: [sgd]\n")
    code = (
        "import sys; from layrot.cli import main;"
        f"rc = main(['sweep', {str(path)!r}, '--store', {str(tmp_path / 's')!r}]);"
        "print(rc, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]
