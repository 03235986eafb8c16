"""Layca's CPU kernel (csrc/layca_cpu.cpp), compiled once per machine and torch version.

Why: on a CPU a Layca step is bound by memory traffic. The kernel reads each layer twice (the
sums w . w, w . s and s . s in one pass, then the update a * w + b * s), in float64 (float32
where nothing cancels) without copies; the torch ops take float64 copies of each layer for
both. ``bench/bench_layca_step.py`` measures either (``LAYROT_CPU_KERNELS=0`` selects the torch
ops).

The first use compiles them with torch.utils.cpp_extension (a C++ compiler and ninja, about 10 s)
into ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``); later processes only load
the library. Without a compiler, Layca warns once and uses torch ops: same results up to rounding.
``LAYROT_CPU_KERNELS=0`` skips the kernels altogether.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("csrc") / "layca_cpu.cpp"
# Portable code (no -march=native: a cache may be shared by nodes). Where torch's threads are
# OpenMP's, at::parallel_for is OpenMP code compiled into the kernel: without -fopenmp it would
# run on one thread. The library then links the libgomp torch has already loaded.
OPENMP = ["-fopenmp"] if torch._C.has_openmp else []
FLAGS = ["-O3", *(OPENMP or ["-fopenmp-simd"])]
ENV_SWITCH = "LAYROT_CPU_KERNELS"
_NOT_LOADED = object()
_ops: Any = _NOT_LOADED
log = logging.getLogger(__name__)


def ops() -> Any | None:
    """``torch.ops.layrot``, whose ``rotate_`` is Algorithm 1 on lists of CPU tensors (see
    Layca._rotate_), or None where the kernels are switched off or cannot be built."""
    global _ops
    if _ops is _NOT_LOADED:
        _ops = None
        if os.environ.get(ENV_SWITCH, "1") != "0":
            try:
                _load()
                # torch.compile traces the op on fake tensors: it changes values in place, nothing else
                torch.library.register_fake("layrot::rotate_")(lambda *args: None)
                _ops = torch.ops.layrot
            except Exception as error:  # a missing compiler shows up as OSError or RuntimeError
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                warnings.warn(f"layrot_core: Layca's CPU kernels are unavailable ({reason}); using torch ops, "
                              f"which are slower. Set {ENV_SWITCH}=0 to skip them.", RuntimeWarning, stacklevel=3)
    return _ops


def build_directory() -> Path:
    """Where the library is built: one folder per torch version and source/flags digest."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:12]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / f"layrot_cpu-torch{torch.__version__}-{digest}"


def _load() -> None:
    folder = build_directory()
    library = folder / "layrot_cpu.so"
    if library.is_file():
        try:
            torch.ops.load_library(str(library))
            return
        except OSError:  # still being written by another process: wait for its build below
            pass
    from torch.utils import cpp_extension  # imported only to build: it is slow to import

    log.warning("layrot_core: compiling Layca's CPU kernels into %s (once per machine, about 10 s)", folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PATH", "")
    # ninja from pip sits next to this Python, which need not be on PATH (a venv used unactivated)
    os.environ["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), path])
    try:
        cpp_extension.load("layrot_cpu", [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=OPENMP,
                           build_directory=str(folder), is_python_module=False)
    finally:
        os.environ["PATH"] = path
