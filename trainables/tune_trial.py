"""A training run as a Ray Tune function trainable (Ray Tune 2.60 API).

Each epoch is reported with a checkpoint holding the whole run state; a trial that Tune
restarts (after a failure, or a resumed sweep) continues from ``ray.tune.get_checkpoint()``.
After a report with ``diverged=True`` the trial ends.

Checkpoints sit in Tune's storage, on a cluster an object store that many people and machines
can write to. Unpickling one would run whatever code it names, so the run state holds only
tensors and plain Python values and is read with ``torch.load(..., weights_only=True)``,
which refuses anything else.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch
from ray import tune

from trainables.train import Run

STATE_FILE = "run_state.pt"
FAIL_ONCE_AT_EPOCH = "_fail_once_at_epoch"


class InjectedFailure(RuntimeError):
    """Raised on purpose (``_fail_once_at_epoch``) so tests can exercise Tune's retries."""


class UnsafeCheckpoint(ValueError):
    """A checkpoint holds objects that only unpickling arbitrary code could rebuild."""


def load_run_state(path: Path) -> dict:
    """A run state saved by ``run_trial``, read without executing anything it contains."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names what it refused ("unsupported GLOBAL posix.system ...") amid general advice.
        lines = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        reason = lines[0].rstrip(".") if lines else type(exc).__name__
        raise UnsafeCheckpoint(f"checkpoint {str(path)!r} holds more than tensors and plain values; refusing to "
                               f"unpickle it ({reason})") from None


def run_trial(config: dict) -> None:
    """Train ``config`` (a ``layrot.run`` config dict) inside a Tune trial.

    Keys starting with "_" are trial controls, not training config. ``_fail_once_at_epoch: N``
    (N >= 1) raises ``InjectedFailure`` right after epoch N was reported, unless the trial was
    restored from a checkpoint of epoch N or later, so a retried trial gets past it.
    """
    fail_at = config.get(FAIL_ONCE_AT_EPOCH)
    if fail_at is not None and (isinstance(fail_at, bool) or not isinstance(fail_at, int) or fail_at < 1):
        raise ValueError(f"{FAIL_ONCE_AT_EPOCH}={fail_at!r} must be an integer >= 1")
    # Ray sets OMP_NUM_THREADS to the trial's CPU count; more torch threads only contend.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))

    run = Run({k: v for k, v in config.items() if not k.startswith("_")})
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            run.load_state_dict(load_run_state(Path(folder) / STATE_FILE))
    restored_epochs = len(run.history)

    while not run.done:
        metrics = run.epoch()
        with tempfile.TemporaryDirectory() as folder:
            torch.save(run.state_dict(), Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        if fail_at == metrics["epoch"] and restored_epochs < fail_at:
            raise InjectedFailure(f"injected failure after epoch {fail_at} ({FAIL_ONCE_AT_EPOCH})")
