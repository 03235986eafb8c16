"""Helpers of the end-to-end sweep tests: driver processes, their Ray processes and sockets,
and the consistency checks of a store they leave."""
import ipaddress
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

CONFIG_KEYS = ["task", "setting", "alpha", "rho0", "seed"]


def ray_env_vars():
    """Environment for driver processes: a private, short Ray temp dir (socket paths are
    limited in length) and no cluster address, so each driver starts its own embedded Ray."""
    with tempfile.TemporaryDirectory(prefix="lrt", dir="/tmp") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        yield {**env, "RAY_TMPDIR": tmp, "PYTHONUNBUFFERED": "1"}


def start(args: list[str], env: dict, log: Path, own_group: bool = False) -> subprocess.Popen:
    """A driver process whose output goes to ``log`` (a pipe could fill up and stall it);
    ``own_group``: in a process group of its own, as a shell runs a command whose Ctrl-C
    reaches the driver and every process it started."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=own_group)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def sweep(*args: str) -> list[str]:
    return ["-m", "layrot", "sweep", *args]


def table(store: Path, table: str, sweep: str) -> pd.DataFrame:
    data = ds.dataset(str(store / table), format="parquet").to_table(filter=ds.field("sweep") == sweep)
    return data.to_pandas()


def check_store(store: Path, sweep: str, num_trials: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Row counts are exactly trials x epochs (x layers), keys are unique, and every value of
    the trials table agrees with a recomputation from the epochs and rotation tables."""
    trials, epochs, rotation = (table(store, t, sweep) for t in ("trials", "epochs", "rotation"))
    assert len(trials) == num_trials and trials.trial_id.is_unique
    assert set(trials.status) <= {"completed", "diverged"}, trials[["trial_id", "status", "error"]]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert not rotation.duplicated(["trial_id", "epoch", "layer"]).any()
    assert len(epochs) == trials.epochs_done.sum()
    assert len(rotation) == (trials.epochs_done * trials.num_layers).sum()

    for t in trials.itertuples():
        e = epochs[epochs.trial_id == t.trial_id].sort_values("epoch")
        r = rotation[rotation.trial_id == t.trial_id]
        assert e.epoch.tolist() == list(range(1, t.epochs_done + 1))
        if t.status == "completed":
            assert t.epochs_done == t.epochs
        last = e.iloc[-1]
        assert t.final_test_acc == last.test_acc and t.final_val_acc == last.val_acc
        assert t.final_train_acc == last.train_acc
        assert (math.isnan(t.final_train_loss) and math.isnan(last.train_loss)) or t.final_train_loss == last.train_loss
        assert (t.final_val_images, t.final_test_images) == (last.val_images, last.test_images)
        assert t.wall_seconds == pytest.approx(e.epoch_seconds.sum())
        for epoch, group in r.groupby("epoch"):
            assert sorted(group.layer) == list(range(t.num_layers))
        final = r[r.epoch == t.epochs_done]
        # a diverged trial's weights may have overflowed: its final rotation is then nan, honestly
        assert t.rotation_mean == pytest.approx(final.cosine_distance.to_numpy().mean(), nan_ok=True)
        assert t.rotation_min == pytest.approx(final.cosine_distance.to_numpy().min(), nan_ok=True)
        assert t.relative_distance_mean == pytest.approx(final.relative_distance.to_numpy().mean(), nan_ok=True)
        assert t.rotation_frac_above_0_9 == pytest.approx(np.mean(final.cosine_distance.to_numpy() > 0.9))
        config = json.loads(t.config_json)
        assert {k: config[k] for k in CONFIG_KEYS} == {k: getattr(t, k) for k in CONFIG_KEYS}
    return trials, epochs, rotation


def row_keys(trials: pd.DataFrame, rotation: pd.DataFrame) -> set:
    """(config, epoch, layer) of every rotation row: comparable across sweeps, whose trial ids differ."""
    merged = rotation.merge(trials[["trial_id", *CONFIG_KEYS]], on="trial_id")
    return set(merged[[*CONFIG_KEYS, "epoch", "layer"]].itertuples(index=False, name=None))


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found



def kill_tree(pid: int) -> None:
    """SIGKILL a driver and every process it started (an embedded Ray's are all below it)."""
    tree = [pid, *descendants(pid)]
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in descendants(pid):   # anything forked in between
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        pass
    return inodes


def _address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    return socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening_sockets(pids: list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state that one of ``pids`` holds,
    from /proc/net/tcp{,6} matched to the processes' socket inodes."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:   # 0A: TCP_LISTEN
                host, port = fields[1].split(":")
                found.append((_address(host, family), int(port, 16), owner[fields[9]]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def unreadable_files(store: Path) -> list[Path]:
    """Store files that pyarrow cannot read, and temp files left behind."""
    import pyarrow.parquet as pq

    bad = []
    for table in ("trials", "epochs", "rotation"):
        for path in (store / table).rglob("*"):
            if path.is_file():
                try:
                    assert not path.name.startswith(".")
                    pq.read_table(path)
                except Exception:
                    bad.append(path)
    return bad


def row_values(trials: pd.DataFrame, rotation: pd.DataFrame) -> dict:
    """(config, epoch, layer) -> cosine distance of every rotation row, comparable across sweeps."""
    merged = rotation.merge(trials[["trial_id", *CONFIG_KEYS]], on="trial_id")
    return {tuple(r[:-1]): r[-1] for r in merged[[*CONFIG_KEYS, "epoch", "layer", "cosine_distance"]]
            .itertuples(index=False, name=None)}
