"""The sweep's console lines, driven by hand-made Tune events on a fake clock: one line per
finished trial, and at most every 30 s the trials running, epochs done of planned and the
time left at the pace of this driver."""
import io
from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial

from run_records import epoch_record

from sweeps import callback as callback_module
from sweeps.callback import StoreCallback

POINT = {"task": "fmnist-quick", "setting": "sgd", "alpha": 0.0, "rho0": 0.5, "seed": 0, "epochs": 4}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(callback_module.time, "monotonic", c)
    return c


def _result(epoch: int) -> dict:
    return {**epoch_record(epoch, 0.25 + epoch / 100, [0.1], lr=0.5, seconds=10.0), "test_acc": 0.3}


def _trial(trial_id: str, status=Trial.RUNNING):
    return SimpleNamespace(trial_id=trial_id, config=dict(POINT), status=status, last_result={},
                           get_error=lambda: None)


def _report(cb, trials, trial, epoch):
    trial.last_result = _result(epoch)
    cb.on_trial_result(0, trials, trial, trial.last_result)


def test_progress_lines_count_epochs_and_estimate_the_time_left(tmp_path, clock):
    out = io.StringIO()
    # 3 trials of 4 epochs; the third one Tune has not created yet.
    cb = StoreCallback(str(tmp_path), "s", num_trials=3, out=out, epochs_total=12)
    cb.setup()
    a, b = _trial("a"), _trial("b", Trial.PENDING)
    clock.now += 10
    _report(cb, [a, b], a, 1)
    assert out.getvalue() == ""                 # not yet 30 s since the start
    clock.now += 20                             # 20 s per epoch since the first: 10 left take 200 s
    _report(cb, [a, b], a, 2)
    [line] = out.getvalue().splitlines()
    assert line.startswith("[s] 0/3 trials done, 1 running; epochs 2/12, about 3m20s left")
    assert line.endswith("| 0m30s")
    for epoch in (3, 4):                        # 10 and 20 s after the last line: none
        clock.now += 10
        _report(cb, [a, b], a, epoch)
    assert len(out.getvalue().splitlines()) == 1

    cb.on_trial_complete(0, [a, b], a)
    a.status = Trial.TERMINATED
    assert out.getvalue().splitlines()[-1] == ("[s] trial 1/3 completed: task=fmnist-quick setting=sgd "
                                               "alpha=0 rho0=0.5 seed=0: val 0.2900 test 0.3000 after 4 epochs")
    b.status = Trial.RUNNING
    clock.now += 20
    _report(cb, [a, b], b, 1)                   # 4 epochs in 60 s after the first: 7 left take 105 s
    assert out.getvalue().splitlines()[-1].startswith("[s] 1/3 trials done, 1 running; epochs 5/12, about 1m45s left")


def test_a_resume_from_the_store_counts_what_was_done_before(tmp_path, clock):
    out = io.StringIO()
    # 2 trials done before (7 epochs, one diverged early); one 4-epoch trial still to run.
    cb = StoreCallback(str(tmp_path), "s", num_trials=3, out=out, done_before=2, epochs_total=11,
                       epochs_before=7, progress_every_s=0)
    cb.setup()
    c = _trial("c")
    clock.now += 20
    _report(cb, [c], c, 1)                      # one epoch gives no pace yet
    assert out.getvalue().splitlines()[-1].startswith("[s] 2/3 trials done, 1 running; epochs 8/11 |")
    clock.now += 10
    _report(cb, [c], c, 2)                      # 10 s per epoch: 2 left take 20 s
    assert out.getvalue().splitlines()[-1].startswith("[s] 2/3 trials done, 1 running; epochs 9/11, about 0m20s left")
    cb.on_trial_complete(0, [c], c)                  # ended after 2 of its 4 epochs: stopped early
    assert out.getvalue().splitlines()[-1].startswith("[s] trial 3/3 pruned")
