"""Output locations checked before any work starts: one line naming the path and what is
allowed, instead of a traceback after minutes of training or after Ray has started."""
from __future__ import annotations

import os
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: str, option: str) -> None:
    """``path`` can be written as a file: not a folder, below a writable folder (missing
    folders are created by the writer)."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise ValueError(f"{option} {path!r} is a directory; give a file name")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise ValueError(f"{option} {path!r} is not writable; give a file you can write")
        return
    _check_folder(target.parent, path, option)


def _check_folder(target: Path, path: str, option: str) -> None:
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise ValueError(f"{option} {path!r}: {str(existing)!r} is a file; give a path below a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path!r}: {str(existing)!r} is not writable; give a path you can write to")


def check_output_dir(path: str, option: str) -> None:
    """``path`` is, or can be created as, a writable directory."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} {path!r} is a file; give a directory (it is created if missing)")
    _check_folder(target, path, option)
