"""One driver per sweep and store: a lock taken before anything starts, held until the end.

Two drivers of one sweep into one store would each run the whole grid and the store would
count every trial twice. The lock lives beside the sweep's grid record,
``STORE/_sweeps/<sweep>.lock`` (local stores) or ``.lease`` (object stores), and names its
holder (host, pid, start time) so a refused launch can say which driver is running.

- Local paths (and ``file://`` URIs): ``flock`` on the lock file. The kernel drops it when the
  driver's process ends, however it ends, so a killed driver never leaves a stale lock.
- Object stores (``s3://``, ``gs://``, ...): pyarrow's filesystems offer no create-if-absent, so
  the lock is a lease object whose holder rewrites it every ``HEARTBEAT_S`` seconds. A lease
  not renewed for ``STALE_S`` seconds belongs to a dead driver and is taken over;
  ``--force-unlock`` takes it over at once. Two drivers that start within the same second can
  both write a lease: each reads it back after ``SETTLE_S`` and only the one whose lease
  survived goes on.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

import pyarrow.fs as pafs

from sweeps.schema import check_sweep_name
from sweeps.store import SWEEPS_DIR, open_store

HEARTBEAT_S = 20.0
STALE_S = 120.0
SETTLE_S = 2.0


class SweepLocked(ValueError):
    """Another driver runs this sweep into this store."""


def sweep_file(store: str, sweep: str, suffix: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of STORE/_sweeps/<sweep><suffix>."""
    fs, root = open_store(store)
    return fs, f"{root.rstrip('/')}/{SWEEPS_DIR}/{check_sweep_name(sweep)}{suffix}"


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _refusal(sweep: str, store: str, holder: dict, hint: str) -> SweepLocked:
    return SweepLocked(f"sweep {sweep!r} is already running into {store!r}: pid {holder.get('pid')} on "
                       f"{holder.get('host')}, started {holder.get('started')}; {hint}")


class FileLock:
    """``flock`` on a local file; the file is removed on release."""

    def __init__(self, path: str):
        self.path, self.fd = path, None

    def acquire(self) -> dict | None:
        """Take the lock, or return the holder's record if someone holds it."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by Ray's processes
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with os.fdopen(fd) as f:
                    try:
                        return json.loads(f.read() or "{}")
                    except json.JSONDecodeError:      # the holder is between create and write
                        return {}
            # The previous holder may have removed the file between our open and flock.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(_holder()).encode())
                self.fd = fd
                return None
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None


class Lease:
    """A lease object renewed by a heartbeat thread, for filesystems without locks."""

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.fs, self.path = fs, path
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record = {**_holder(), "token": self.token}

    def read(self) -> dict | None:
        if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.path) as f:
            try:
                return json.loads(f.readall().decode())
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {}

    def _write(self) -> None:
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps({**self._record, "heartbeat": time.time()}).encode())

    def acquire(self, force: bool) -> dict | None:
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        held = self.read()
        if held is not None and not force and time.time() - float(held.get("heartbeat", 0)) < STALE_S:
            return held
        self._write()
        time.sleep(SETTLE_S)
        held = self.read()
        if held is None or held.get("token") != self.token:
            return held or {}
        self._thread = threading.Thread(target=self._beat, name="layrot-sweep-lease", daemon=True)
        self._thread.start()
        return None

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                held = self.read()
                if held is not None and held.get("token") not in (None, self.token):
                    return        # taken over (--force-unlock): never overwrite the new holder's lease
                self._write()
            except OSError:
                pass  # a transient storage error: the next beat retries, staleness allows for it

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            held = self.read()
            if held is not None and held.get("token") == self.token:
                self.fs.delete_file(self.path)


class SweepLock:
    """``with SweepLock(store, sweep, force_unlock):`` holds the sweep's lock or raises
    ``SweepLocked`` naming the running driver."""

    def __init__(self, store: str, sweep: str, force_unlock: bool = False):
        self.store, self.sweep, self.force_unlock = store, sweep, force_unlock
        if "://" not in store or store.startswith("file://"):
            fs, path = sweep_file(store, sweep, ".lock")
            self._lock: FileLock | Lease = FileLock(path)
        else:
            fs, path = sweep_file(store, sweep, ".lease")
            self._lock = Lease(fs, path)

    def __enter__(self) -> SweepLock:
        if isinstance(self._lock, FileLock):
            held = self._lock.acquire()
            hint = "wait for it to end or stop it"
        else:
            held = self._lock.acquire(self.force_unlock)
            hint = (f"wait for it to end or stop it; if its driver died, the lease expires {STALE_S:g} s after "
                    "its last heartbeat, or pass --force-unlock")
        if held is not None:
            raise _refusal(self.sweep, self.store, held, hint)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
