"""The driver-side Tune callback: writes the store as results arrive and shows progress.

Tune calls it in the driver for every per-epoch report and every trial end, so the store is
written by one process (no write races between trials) and needs no storage on the workers.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from layrot.run import EPOCH_KEYS, best_configuration, configuration, rate_label, resolve
from sweeps.store import TrialRecord, stored_epochs


def _run_config(trial: Trial) -> dict:
    """A trial's run config: its Tune config without the "_" trial controls."""
    return {k: v for k, v in trial.config.items() if not k.startswith("_")}


def _last_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


class StoreCallback(Callback):
    """One ``TrialRecord`` per trial, rewritten to the store on every report.

    A driver that resumes a sweep starts with no records: the first event of each trial loads
    what the store already holds for it, so the trial's files continue where they stopped.
    """

    def __init__(self, store: str, sweep: str, num_trials: int, progress_every_s: float = 30.0,
                 out: TextIO | None = None):
        self.store, self.sweep, self.num_trials = store, sweep, num_trials
        self.progress_every_s = progress_every_s
        self.out = out
        self._records: dict[str, TrialRecord] = {}
        self._started = self._last_progress = 0.0

    def __getstate__(self) -> dict:  # Tune pickles its run config; records are rebuilt from the store
        return {**self.__dict__, "_records": {}, "out": None}

    def setup(self, **info) -> None:
        self._started = time.monotonic()

    def _record(self, trial: Trial) -> TrialRecord:
        rec = self._records.get(trial.trial_id)
        if rec is None:
            rec = TrialRecord(self.sweep, trial.trial_id, resolve(_run_config(trial)))
            rec.epochs = stored_epochs(self.store, self.sweep, trial.trial_id)
            self._records[trial.trial_id] = rec
        return rec

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        rec = self._record(trial)
        rec.add_epoch({k: result[k] for k in EPOCH_KEYS})
        rec.status, rec.error = "running", None
        rec.write(self.store)
        if time.monotonic() - self._last_progress >= self.progress_every_s:
            self._progress(trials)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        rec = self._record(trial)
        if (trial.last_result or {}).get("diverged"):
            rec.finish("diverged")
        elif len(rec.epochs) < rec.config.epochs:   # the sweep's scheduler stopped it early
            rec.finish("pruned")
        else:
            rec.finish("completed")
        rec.write(self.store)
        self._progress(trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        rec = self._record(trial)
        rec.finish("errored", _last_line(trial.get_error()) or "unknown error")
        rec.write(self.store)
        self._progress(trials)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._say(f"[{self.sweep}] trial {trial.trial_id} failed "
                  f"({_last_line(trial.get_error()) or 'unknown error'}); retrying from its last checkpoint")

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        self._progress(trials)

    def _progress(self, trials: list[Trial]) -> None:
        """One line: trials done / running / failed and the best validation accuracy so far."""
        self._last_progress = time.monotonic()
        by_status: dict[str, int] = {}
        for t in trials:
            by_status[t.status] = by_status.get(t.status, 0) + 1
        diverged = sum(1 for t in trials if t.status == Trial.TERMINATED and (t.last_result or {}).get("diverged"))
        done = by_status.get(Trial.TERMINATED, 0)
        best = self._best(trials)
        elapsed = int(time.monotonic() - self._started)
        line = (
            f"[{self.sweep}] {done + by_status.get(Trial.ERROR, 0)}/{self.num_trials} done "
            f"({done - diverged} completed, {diverged} diverged, {by_status.get(Trial.ERROR, 0)} errored), "
            f"{by_status.get(Trial.RUNNING, 0)} running, {by_status.get(Trial.PENDING, 0)} pending"
            f"{best} | {elapsed // 60}m{elapsed % 60:02d}s"
        )
        self._say(line)

    @staticmethod
    def _best(trials: list[Trial]) -> str:
        """The configuration with the best seed-mean latest validation accuracy (layrot.run's rule)."""
        scored = [t for t in trials if "val_acc" in (t.last_result or {})]
        best = best_configuration((configuration(resolve(_run_config(t)).experiment()), t.last_result["val_acc"]) for t in scored)
        if best is None:
            return ""
        c = dict(best)
        accs = [t.last_result["val_acc"] for t in scored if configuration(resolve(_run_config(t)).experiment()) == best]
        return (f" | best val_acc {sum(accs) / len(accs):.4f} over {len(accs)} seed(s) ({c['task']} {c['setting']} "
                f"alpha={c['alpha']:g} rho0={rate_label(c['rho0'])})")

    def _say(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)
