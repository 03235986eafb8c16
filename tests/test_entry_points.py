"""Every script in bench/ and examples/ has a --smoke-test mode, and it runs.

Scripts are discovered, not listed: a new script without a smoke test fails here. A file without
a ``__main__`` guard is a module the scripts import (bench/readme_block.py), not an entry point.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for folder in ("bench", "examples") for p in (ROOT / folder).glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text())
# Smoke tests that take more than a few seconds: real Ray, several processes, real data.
SLOW = {"bench/bench_sweep_overhead.py", "bench/bench_epoch_seconds.py", "examples/layca_own_loop.py"}


def _name(script: Path) -> str:
    return str(script.relative_to(ROOT))


def test_discovery_finds_the_benchmarks_and_the_example():
    names = {_name(s) for s in SCRIPTS}
    assert {"bench/bench_layca_step.py", "bench/bench_gpu_share.py", "examples/layca_own_loop.py"} <= names
    assert "bench/readme_block.py" not in names
    assert SLOW <= names, SLOW - names


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_declares_a_smoke_test_option(script: Path):
    assert 'add_argument("--smoke-test"' in script.read_text(), f"{_name(script)} has no --smoke-test option"


@pytest.mark.parametrize("script", [pytest.param(s, id=_name(s), marks=[pytest.mark.slow] if _name(s) in SLOW else [])
                                    for s in SCRIPTS])
def test_smoke_test_runs(script: Path):
    # this checkout's packages first, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    readme = (ROOT / "README.md").read_bytes()
    done = subprocess.run([sys.executable, str(script), "--smoke-test"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{_name(script)} --smoke-test failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{_name(script)} --smoke-test printed nothing"
    assert (ROOT / "README.md").read_bytes() == readme, "a smoke test must not write the README"
