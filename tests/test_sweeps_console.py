"""Quiet output: while a sweep runs, everything written to the driver's stdout and stderr (by
Python, by C++ libraries, by child processes such as Ray's) lands in the log file, and only
layrot's own lines reach the terminal; ``--verbose`` (no log file) changes nothing."""
import subprocess
import sys

CODE = """
import os, subprocess, sys
from sweeps.console import quiet_output, say
log = sys.argv[1] if len(sys.argv) > 1 else None
with quiet_output(log):
    print("python noise"); print("stderr noise", file=sys.stderr)
    os.write(1, b"fd noise\\n")
    subprocess.run(["sh", "-c", "echo child noise; echo child err >&2"])
    say("[s] our line")
print("after")
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, check=True)


def test_noise_goes_to_the_log_and_our_lines_to_the_terminal(tmp_path):
    log = tmp_path / "_tune" / "s.log"
    done = _run(str(log))
    assert done.stdout == "[s] our line\nafter\n" and done.stderr == ""
    assert sorted(log.read_text().splitlines()) == sorted(
        ["python noise", "stderr noise", "fd noise", "child noise", "child err"])


def test_without_a_log_everything_shows():
    done = _run()
    assert "python noise" in done.stdout and "child noise" in done.stdout and "[s] our line" in done.stdout
    assert "stderr noise" in done.stderr and "child err" in done.stderr
