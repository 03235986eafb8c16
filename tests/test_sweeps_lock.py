"""One driver per sweep: the local flock and the object-store lease, without Ray."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pytest

from sweeps import lock
from sweeps.lock import Lease, SweepLock, SweepLocked

HOLD = ("import sys, time; from sweeps.lock import SweepLock\n"
        "with SweepLock(sys.argv[1], 'demo'):\n"
        "    print('held', flush=True); time.sleep(600)\n")


def _holder(store) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_is_refused_with_the_holder_named_and_the_lock_dies_with_it(tmp_path):
    holder = _holder(tmp_path / "store")
    try:
        with pytest.raises(SweepLocked, match=rf"sweep 'demo' is already running into '.*store': pid {holder.pid} "
                                               rf"on {socket.gethostname()}, started 20\d\d-\d\d-\d\dT"):
            with SweepLock(str(tmp_path / "store"), "demo"):
                pass
        with SweepLock(str(tmp_path / "store"), "other"):   # another sweep of the same store is free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with SweepLock(f"file://{tmp_path / 'store'}", "demo"):  # no stale lock after a SIGKILL
        assert json.loads((tmp_path / "store" / "_sweeps" / "demo.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "store" / "_sweeps" / "demo.lock").exists()


@pytest.fixture
def fast_lease(monkeypatch):
    monkeypatch.setattr(lock, "SETTLE_S", 0.05)
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(lock, "STALE_S", 1.0)


def _lease(tmp_path) -> Lease:
    return Lease(pafs.LocalFileSystem(), str(tmp_path / "_sweeps" / "demo.lease"))


def test_a_live_lease_refuses_and_its_heartbeat_keeps_it_live(tmp_path, fast_lease):
    first = _lease(tmp_path)
    assert first.acquire(force=False) is None
    try:
        time.sleep(2.5)   # past the staleness timeout: only the heartbeat keeps the lease fresh
        held = _lease(tmp_path).acquire(force=False)
        assert held["pid"] == os.getpid() and held["token"] == first.token
    finally:
        first.release()
    assert first.read() is None     # released: the lease object is gone
    second = _lease(tmp_path)
    assert second.acquire(force=False) is None
    second.release()


def test_a_stale_lease_is_taken_over_and_force_takes_a_live_one(tmp_path, fast_lease):
    path = tmp_path / "_sweeps" / "demo.lease"
    path.parent.mkdir()
    dead = {"host": "gone", "pid": 1, "started": "2026-01-01T00:00:00Z", "token": "dead"}
    path.write_text(json.dumps({**dead, "heartbeat": time.time() - 5.0}))   # older than STALE_S
    taker = _lease(tmp_path)
    assert taker.acquire(force=False) is None
    taker.release()
    path.write_text(json.dumps({**dead, "heartbeat": time.time() + 60}))    # live
    assert _lease(tmp_path).acquire(force=False)["token"] == "dead"
    forced = _lease(tmp_path)
    assert forced.acquire(force=True) is None and forced.read()["token"] == forced.token
    forced.release()


def test_a_lease_taken_over_by_force_is_not_overwritten_by_the_old_holders_heartbeat(tmp_path, fast_lease):
    old = _lease(tmp_path)
    assert old.acquire(force=False) is None
    new = _lease(tmp_path)
    assert new.acquire(force=True) is None
    new._stop.set()                      # only the old holder beats from here on
    time.sleep(0.5)                      # several of its heartbeats
    assert new.read()["token"] == new.token
    old.release()                        # leaves the new holder's lease alone
    assert new.read()["token"] == new.token
    new.release()


def test_of_two_drivers_writing_a_lease_at_once_only_the_surviving_one_goes_on(tmp_path, fast_lease, monkeypatch):
    ours, theirs = _lease(tmp_path), _lease(tmp_path)
    real_sleep = time.sleep

    def rival_writes_during_settle(seconds):
        theirs._write()          # the rival's write lands after ours
        real_sleep(seconds)

    monkeypatch.setattr(lock.time, "sleep", rival_writes_during_settle)
    assert ours.acquire(force=False)["token"] == theirs.token
    assert ours._thread is None   # no heartbeat for a lease it does not hold


def test_object_store_refusal_names_the_holder_and_the_way_out(tmp_path, fast_lease, monkeypatch):
    monkeypatch.setattr(lock, "sweep_file", lambda store, sweep, suffix: (
        pafs.LocalFileSystem(), str(tmp_path / "_sweeps" / f"{sweep}{suffix}")))
    with SweepLock("s3://bucket/store", "demo"):
        with pytest.raises(SweepLocked, match=rf"pid {os.getpid()} .*--force-unlock"):
            with SweepLock("s3://bucket/store", "demo"):
                pass
        with SweepLock("s3://bucket/store", "demo", force_unlock=True):
            pass
