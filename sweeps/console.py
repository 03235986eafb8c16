"""Where a sweep's output goes: layrot's own lines to the terminal, everything else to a log.

Ray and Tune print banners, warnings (token authentication, deprecations), colour codes and
the trials' own output; their child processes inherit the driver's stdout and stderr. So the
driver's file descriptors 1 and 2 are pointed at the log file for the whole sweep, and
layrot's lines go through ``console()``, a copy of the terminal kept aside. ``--verbose``
leaves the descriptors alone.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_console: TextIO | None = None


def console() -> TextIO:
    """The terminal, also while ``quiet_output`` sends stdout and stderr to the log."""
    return _console or sys.stdout


def say(line: str) -> None:
    print(line, file=console(), flush=True)


@contextmanager
def quiet_output(log_path: str | None) -> Iterator[None]:
    """Send fds 1 and 2 (this process and every process it starts) to ``log_path``; None
    changes nothing."""
    global _console
    if log_path is None:
        yield
        return
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _console.close()
        _console = None
