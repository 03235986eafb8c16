"""layrot: monitor and control layer rotation while training (the application layer).

The reusable optimizer and monitor live in :mod:`layrot_core`; this package holds the CLI.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("layrot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
