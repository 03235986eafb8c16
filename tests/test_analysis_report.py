import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.synthetic import write_synthetic_store
from layrot.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "store"
    write_synthetic_store(str(path), "demo", tasks=("C10-CNN1",), n_trials=40, epochs=6, layers=4, running=2)
    return path


def test_report_is_one_self_contained_file(store, tmp_path, capsys):
    out = tmp_path / "sub" / "report.html"
    assert main(["report", "--store", str(store), "-o", str(out), "--bootstrap", "200"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    # plotly.js inlined exactly once, nothing fetched from elsewhere.
    assert text.count("Plotly=") + text.count("Plotly =") >= 1
    assert len(re.findall(r"plotly\.js v\d+\.\d+\.\d+", text)) == 1
    assert not re.search(r"<script[^>]+src=", text)
    assert re.findall(r'id="(figure-\d)"', text) == [f"figure-{i}" for i in range(1, 7)]
    assert "Yes: larger final layer rotation" in text
    assert "2 trial(s) not finished</b> (2 running)" in text
    assert 'id="threshold-warning"' not in text                 # the registered threshold: no warning
    # the baseline comparison is the second section, after the answers
    heads = re.findall(r"<h2>(.*?)</h2>", text)
    assert heads[:3] == ["Answer per task", "Is rotation a better predictor than the obvious alternatives?",
                         "Diagnosis per setting"]
    # no modebar button may upload a figure
    assert '"showSendToCloud": false' in text and '"sendDataToCloud"' in text and '"displaylogo": false' in text
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp file left behind


def test_another_threshold_is_announced_at_the_top(store, tmp_path):
    out = tmp_path / "loose.html"
    assert main(["report", "--store", str(store), "--min-train-acc", "0.9", "-o", str(out), "--bootstrap", "50"]) == 0
    text = out.read_text()
    warning = text.index('id="threshold-warning"')
    assert warning < text.index("<h2>") and "threshold of 0.9, not the 0.99 pre-registered" in text


def test_report_of_one_sweep_and_task_filter(store, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", "--store", str(store), "--sweep", "demo", "--task", "C10-CNN1", "-o", str(out),
                 "--bootstrap", "50"]) == 0
    assert out.exists()


def test_setting_filter_leaves_only_that_settings_trials_in_the_figures(store, tmp_path):
    from analysis.load import load

    out = tmp_path / "layca.html"
    assert main(["report", "--store", str(store), "--setting", "layca-sgd", "-o", str(out), "--bootstrap", "50"]) == 0
    shown = set(re.findall(r"trial (trial_\d{5})", out.read_text()))     # every hover names its trial
    trials = load(str(store)).trials
    assert shown and shown <= set(trials.loc[trials["setting"] == "layca-sgd", "trial_id"])
    assert not shown & set(trials.loc[trials["setting"] != "layca-sgd", "trial_id"])


@pytest.mark.parametrize("make_args, message", [
    (lambda store, empty: ["--store", str(store), "--setting", "sgd+layca"],
     "setting='sgd+layca' is not allowed: write 'layca-sgd'"),
    (lambda store, empty: ["--store", str(store), "--sweep", "nope"], "sweep 'nope' is not in store"),
    (lambda store, empty: ["--store", str(empty)], "holds no trials yet"),
    (lambda store, empty: ["--store", str(empty / "missing")], "does not exist"),
    (lambda store, empty: ["--store", str(store), "--min-train-acc", "2"], "--min-train-acc 2.0 must be in [0, 1]"),
    (lambda store, empty: [], "--store DIR is required"),
])
def test_bad_input_gives_one_line_and_no_file(store, tmp_path, capsys, make_args, message):
    empty = tmp_path / "empty"
    (empty / "trials").mkdir(parents=True)
    out = tmp_path / "report.html"
    assert main(["report", *make_args(store, empty), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("layrot report: error: ") and message in err[-1]
    assert not out.exists()


def test_smoke_test_runs_in_seconds(tmp_path):
    out = tmp_path / "smoke.html"
    done = subprocess.run([sys.executable, "-m", "layrot", "report", "--smoke-test", "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 1_000_000 and "smoke" in out.read_text()[:3000]


def test_cli_module_imports_nothing_heavy():
    code = ("import sys, analysis.cli; print(','.join(m for m in ('pandas', 'pyarrow', 'plotly', 'torch', 'ray') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_a_report_and_a_summary_draw_without_torch(tmp_path):
    study = str(Path(__file__).resolve().parents[1] / "results" / "study-30ep")
    code = ("import argparse, sys, analysis.cli, analysis.summary_cli\n"
            "def call(mod, argv):\n"
            "    parser = argparse.ArgumentParser(); mod.add_arguments(parser); return mod.run(parser.parse_args(argv))\n"
            f"assert call(analysis.cli, ['--store', {study!r}, '-o', {str(tmp_path / 'r.html')!r}, '--bootstrap', '20']) == 0\n"
            f"assert call(analysis.summary_cli, ['--store', {study!r}]) == 0\n"
            "bad = [m for m in ('torch', 'ray', 'trainables', 'layrot_core') if m in sys.modules]\n"
            "print('imported', bad, file=sys.stderr); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
