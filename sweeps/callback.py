"""The driver-side Tune callback: writes the store as results arrive and shows progress.

Tune calls it in the driver for every per-epoch report and every trial end, so the store is
written by one process (no write races between trials) and needs no storage on the workers.
The console gets one line per finished trial and, at most every ``progress_every_s``, one line
with the trials running, the epochs done of all planned and an estimate of the time left.
"""
from __future__ import annotations

import time
from typing import TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from layrot.run import EPOCH_KEYS, best_configuration, configuration, rate_label, resolve
from sweeps.console import say
from sweeps.spec import AXIS_KEYS
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
                 out: TextIO | None = None, done_before: int = 0, epochs_total: int = 0,
                 epochs_before: int = 0):
        """``done_before`` trials (with ``epochs_before`` epochs) of the sweep's ``num_trials``
        ended before this Tune experiment began (a resume from the store alone);
        ``epochs_total`` is the whole grid's planned epochs."""
        self.store, self.sweep, self.num_trials = store, sweep, num_trials
        self.progress_every_s = progress_every_s
        self.out = out
        self.done_before, self.epochs_total, self.epochs_before = done_before, epochs_total, epochs_before
        self._records: dict[str, TrialRecord] = {}
        self._started = self._last_progress = self._first_epoch_at = 0.0
        self._session_epochs = 0

    def __getstate__(self) -> dict:  # Tune pickles its run config; records are rebuilt from the store
        return {**self.__dict__, "_records": {}, "out": None}

    def setup(self, **info) -> None:
        self._started = self._last_progress = time.monotonic()
        self._session_epochs = 0

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
        self._session_epochs += 1
        if self._session_epochs == 1:
            self._first_epoch_at = time.monotonic()
        if time.monotonic() - self._last_progress >= self.progress_every_s:
            self._progress(trials)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        rec = self._record(trial)
        missing = rec.missing_epochs()
        if missing:
            rec.finish("errored", f"the store lacks epochs {_span(missing)} of this trial (was it changed while "
                                  f"the sweep ran?); remove {self.store}/_tune/{self.sweep} and run again with "
                                  f"--resume: a resume from the store alone reruns the trial")
        elif (trial.last_result or {}).get("diverged"):
            rec.finish("diverged")
        elif len(rec.epochs) < rec.config.epochs:   # the sweep's scheduler stopped it early
            rec.finish("pruned")
        else:
            rec.finish("completed")
        rec.write(self.store)
        self._trial_line(trials, trial, rec)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        rec = self._record(trial)
        rec.finish("errored", _last_line(trial.get_error()) or "unknown error")
        rec.write(self.store)
        self._trial_line(trials, trial, rec)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._say(f"[{self.sweep}] trial {trial.trial_id} failed "
                  f"({_last_line(trial.get_error()) or 'unknown error'}); retrying from its last checkpoint")

    def _ended(self, trials: list[Trial], ending: Trial | None = None) -> int:
        """Trials of the sweep that have ended, ``ending`` included (Tune calls the trial-end
        hooks before it changes the trial's status)."""
        return self.done_before + sum(1 for t in trials if t is ending or t.status in (Trial.TERMINATED, Trial.ERROR))

    def _trial_line(self, trials: list[Trial], trial: Trial, rec: TrialRecord) -> None:
        """One line per finished trial: its grid point, status and final accuracies."""
        point = " ".join(f"{k}={_short(k, trial.config[k])}" for k in AXIS_KEYS.values() if k in trial.config)
        last = rec.epochs[max(rec.epochs)] if rec.epochs else None
        scores = (f"val {last['val_acc']:.4f} test {last['test_acc']:.4f} after {len(rec.epochs)} epochs"
                  if last else "no epoch")
        error = f" ({rec.error})" if rec.error else ""
        self._say(f"[{self.sweep}] trial {self._ended(trials, trial)}/{self.num_trials} {rec.status}: {point}: "
                  f"{scores}{error}")

    def _progress(self, trials: list[Trial]) -> None:
        """One line: trials done and running, epochs done of planned, time left at this pace."""
        self._last_progress = time.monotonic()
        running = sum(1 for t in trials if t.status == Trial.RUNNING)
        done = total = 0
        for t in trials:
            rec = self._record(t)
            finished = t.status in (Trial.TERMINATED, Trial.ERROR)
            done += len(rec.epochs)
            total += len(rec.epochs) if finished else max(rec.config.epochs, len(rec.epochs))
        # Trials Tune has not created yet are still to run in full.
        unseen = self.epochs_total - self.epochs_before - sum(self._record(t).config.epochs for t in trials)
        done, total = done + self.epochs_before, total + self.epochs_before + max(unseen, 0)
        now = time.monotonic()
        # The pace from the first epoch on: Ray's start and the first trial's set-up are behind us.
        left = (f", about {_duration((total - done) * (now - self._first_epoch_at) / (self._session_epochs - 1))} left"
                if self._session_epochs > 1 else "")
        elapsed = now - self._started
        self._say(f"[{self.sweep}] {self._ended(trials)}/{self.num_trials} trials done, {running} running; "
                  f"epochs {done}/{total}{left}{self._best(trials)} | {_duration(elapsed)}")

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
        if self.out is not None:
            print(line, file=self.out, flush=True)
        else:
            say(line)


def _span(epochs: list[int]) -> str:
    """Sorted epoch numbers as ranges: [3, 4, 5, 9] -> "3-5, 9"."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _short(key: str, value: object) -> str:
    if key == "rho0":
        return rate_label(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
