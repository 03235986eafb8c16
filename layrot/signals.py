"""SIGINT and SIGTERM as one exception, so every command ends the same way on either:
cleanup runs, a line says what happened, and the exit status is the shell's 128 + signal."""
from __future__ import annotations

import signal


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process got ``signum``. A KeyboardInterrupt, so code
    that catches ``Exception`` does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(signum: int) -> int:
    """130 for SIGINT, 143 for SIGTERM, as a shell reports a process ended by the signal."""
    return 128 + signum


def raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def install() -> dict:
    """Make SIGINT and SIGTERM raise ``Interrupted`` in the main thread; returns the handlers
    they had, for ``restore``."""
    return {signum: signal.signal(signum, raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
