import json
import urllib.error
import urllib.request

import pytest

from layrot.cli import main
from trainables.cli import rate
from trainables.data import SYSTEM_FASHION_MNIST
from layrot.tasks import TASKS

needs_fashion_mnist = pytest.mark.skipif(not SYSTEM_FASHION_MNIST.exists(), reason="needs dataset-fashion-mnist")


def test_tasks_lists_the_registry(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for task in TASKS.values():
        assert task.name in out and task.model in out
    assert "x0.2 at 80, 90, 97" in out


def test_tasks_smoke_test_builds_every_model(capsys):
    assert main(["tasks", "--smoke-test"]) == 0
    out = capsys.readouterr().out
    for name, kernels in [("C10-CNN1", 25), ("C100-resnet", 34), ("tiny-CNN", 11), ("C10-CNN2", 15), ("C100-WRN", 29)]:
        assert f"{name}: {TASKS[name].model} builds, {kernels} kernel layers" in out


def test_rate_accepts_numbers_and_powers_of_three():
    assert rate("0.25") == 0.25
    assert rate("3^-3") == pytest.approx(1 / 27)
    with pytest.raises(Exception, match="not a rate"):
        rate("3**2")


@needs_fashion_mnist
def test_train_smoke_test_prints_epochs_summary_and_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYROT_DATA", str(tmp_path / "data"))
    out_file = tmp_path / "run.json"
    code = main(["train", "--task", "fmnist-quick", "--optimizer", "layca-sgd", "--alpha", "-0.5", "--rho0", "3^-2",
                 "--threads", "1", "--smoke-test", "--json", str(out_file)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("layrot train: fmnist-quick with layca-sgd, alpha -0.5, rho0 3^-2")
    assert [line.split()[1] for line in lines[1:3]] == ["1/2", "2/2"]
    assert lines[3].startswith("2 epochs in ")
    saved = json.loads(out_file.read_text())
    assert saved["config"]["alpha"] == -0.5 and saved["config"]["epochs"] == 2
    assert len(saved["history"]) == 2 and len(saved["history"][0]["cosine_distance"]) == 4
    assert saved["config"]["setting"] == "layca-sgd"


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "nope"], "task='nope' is not allowed: one of C10-CNN1"),
    (["train", "--alpha", "1.5"], "alpha=1.5 is not allowed: a number in [-1, 1]"),
    (["train", "--optimizer", "lamb"], "setting='lamb' is not allowed: one of sgd, sgd-l2, adam, rmsprop, adagrad"),
    (["train", "--optimizer", "sgd+layca"], "setting='sgd+layca' is not allowed: write 'layca-sgd'"),
    (["train", "--optimizer", "sgd_l2"], "setting='sgd_l2' is not allowed: write 'sgd-l2'"),
    (["train", "--device", "tpu"], "device='tpu' is not allowed: auto, cpu, cuda or cuda:N"),
    (["train", "--threads", "0"], "--threads 0: must be >= 1"),
    (["train", "--device", "cuda:99", "--smoke-test"], "device='cuda:99', but"),
])
def test_bad_values_are_one_line_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"layrot {argv[0]}: error: {err.split(': error: ', 1)[1]}" and err.count("\n") == 1
    assert message in err


def test_the_old_layca_flag_names_its_replacement(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--layca"])
    assert info.value.code == 2
    assert "--layca is gone: write --optimizer layca-sgd" in capsys.readouterr().err


def test_missing_dataset_offline_is_one_line(capsys, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert main(["train", "--task", "C10-CNN1", "--data-dir", str(tmp_path), "--smoke-test"]) == 2
    progress, error = capsys.readouterr().err.splitlines()[-2:]
    assert progress == f"layrot: CIFAR10 not found under {tmp_path}; downloading it there"
    assert error.startswith(f"layrot train: error: CIFAR10 not found under {tmp_path} and its download failed")
    assert error.endswith(f"{tmp_path}/cifar-10-batches-py exists")
