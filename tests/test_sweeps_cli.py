import os
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


def _refused_before_ray(args: list[str], tmp_path, wrap: list[str] | None = None) -> str:
    """Run `layrot ARGS` (or the command ``wrap``) in a fresh process: it must exit 2 with one
    line on stderr, and Ray must not have started (it would make a session in RAY_TMPDIR)."""
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(wrap or [sys.executable, "-m", "layrot", *args], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert list(ray_tmp.iterdir()) == []
    return out.stderr


def test_a_store_that_is_a_file_is_refused_before_ray_starts(tmp_path):
    store = tmp_path / "results"
    store.write_text("not a folder")
    err = _refused_before_ray(["sweep", "quick", "--store", str(store / "sub")], tmp_path)
    assert err.startswith(f"layrot sweep: error: --store '{store / 'sub'}': '{store}' is a file; give a path below")
    assert store.read_text() == "not a folder"


def test_a_read_only_store_is_refused_before_ray_starts(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    layrot = [sys.executable, "-m", "layrot", "sweep", "quick", "--store", str(folder / "store")]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        wrap = layrot
    else:  # root writes through permissions: a read-only mount in a private mount namespace
        if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
            pytest.skip("root without mount namespaces: cannot make a read-only folder")
        wrap = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o ro,size=1m tmpfs {folder} && exec "$@"', "sh",
                *layrot]
    err = _refused_before_ray([], tmp_path, wrap=wrap)
    assert err.startswith(f"layrot sweep: error: --store '{folder / 'store'}': '{folder}' is not writable")
    assert not (folder / "store").exists()


def test_cuda_trials_on_a_machine_without_cuda_are_refused_before_ray_starts(tmp_path):
    from ray._private.accelerators import get_accelerator_manager_for_resource
    if get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators():
        pytest.skip("this machine has a CUDA device")
    spec = tmp_path / "gpu.yaml"
    spec.write_text("tasks: [fmnist-quick]\nsettings: [sgd]\nrho0: [0.1]\ntrain: {device: cuda}\n")
    err = _refused_before_ray(["sweep", str(spec), "--store", str(tmp_path / "store")], tmp_path)
    assert err.startswith("layrot sweep: error: train.device='cuda', but this machine has no CUDA device; "
                          "use device auto or cpu")
    assert not (tmp_path / "store").exists()


def test_a_misspelt_spec_name_lists_the_closest_shipped_specs(tmp_path, capsys):
    assert main(["sweep", "quik", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layrot sweep: error: no spec file 'quik' and no shipped spec of that name; "
                          "did you mean quick?")
    assert "shipped: paper-adaptive, paper-layca, paper-sgd, quick," in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()
