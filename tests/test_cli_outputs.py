"""Output paths are checked before any work: `layrot train --json` and `layrot report -o`
name the bad path in one line, and nothing is trained, loaded or written."""
import time

import pytest

from layrot.cli import main
from layrot.paths import check_output_file


def _below_a_file(d):
    (d / "notes.txt").write_text("a file")
    return d / "notes.txt" / "out.json"


@pytest.mark.parametrize("make, message", [
    (lambda d: d, "is a directory; give a file name"),
    (_below_a_file, "'{d}/notes.txt' is a file; give a path below a directory"),
])
def test_train_json_path_is_checked_before_training(tmp_path, capsys, make, message):
    path = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    start = time.perf_counter()
    assert main(["train", "--smoke-test", "--task", "fmnist-quick", "--json", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"layrot train: error: --json '{path}'") and captured.err.count("\n") == 1
    assert message.format(d=tmp_path) in captured.err
    assert "epoch" not in captured.out and time.perf_counter() - start < 5   # nothing trained
    assert sorted(tmp_path.rglob("*")) == before                           # nothing written


def test_report_output_path_is_checked_before_loading(tmp_path, capsys):
    assert main(["report", "--store", str(tmp_path / "no-store"), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"layrot report: error: -o/--output '{tmp_path}' is a directory; give a file name\n"
    (tmp_path / "file").write_text("")
    assert main(["report", "--smoke-test", "-o", str(tmp_path / "file" / "r.html")]) == 2
    assert "is a file" in capsys.readouterr().err and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_writable_file_path_passes(tmp_path):
    check_output_file(str(tmp_path / "new.json"), "--json")
    check_output_file(str(tmp_path / "new" / "folders" / "r.html"), "-o")   # the writer creates them
    (tmp_path / "old.json").write_text("{}")
    check_output_file(str(tmp_path / "old.json"), "--json")
