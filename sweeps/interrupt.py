"""SIGINT and SIGTERM during a sweep: the first stops it cleanly, a second stops it at once.

Ray Tune stops an experiment cleanly (no new trials, trial state saved, running trials left
resumable, ``Tuner.fit`` returns) on the signal it listens for itself; layrot turns its own
SIGINT handling off (``TUNE_DISABLE_SIGINT_HANDLER``) and forwards the first SIGINT or SIGTERM
to Tune's handler, which Tune always installs for SIGUSR1 while ``fit`` runs
(``ray.tune.tune._setup_signal_catching``). Outside ``fit``, or on a second signal, the
handler raises ``Interrupted``: the store needs no clean-up, since every write to it replaces
whole files atomically.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from layrot.signals import Interrupted

TUNE_STOP = signal.SIGUSR1
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepSignals:
    """The sweep's handler; ``signum`` is the first signal received, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._in_fit = False

    def _handle(self, signum: int, frame: object) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        tune_stop = signal.getsignal(TUNE_STOP)
        if first and self._in_fit and callable(tune_stop):
            tune_stop(signum, frame)
        else:
            raise Interrupted(self.signum)

    def reclaim(self) -> None:
        """Take the signals back: ray.init puts a handler of Ray's core in place for SIGTERM
        (a stack dump, then exit status 1)."""
        for s in SIGNALS:
            signal.signal(s, self._handle)

    @contextmanager
    def tune_fit(self) -> Iterator[None]:
        """Around ``Tuner.fit()``: a first signal asks Tune to stop cleanly."""
        signal.signal(TUNE_STOP, signal.SIG_DFL)   # only the handler of this fit counts
        self.reclaim()
        self._in_fit = True
        try:
            yield
        finally:
            self._in_fit = False


@contextmanager
def sweep_signals() -> Iterator[SweepSignals]:
    handler = SweepSignals()
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    handler.reclaim()
    tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield handler
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if tune_sigint is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_sigint
