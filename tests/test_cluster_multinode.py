"""A real two-node Ray cluster on this machine runs a smoke sweep through `layrot sweep --address`.

The head and a worker node are separate `ray start --block` processes, each with its own CPU,
ports and --temp-dir. They run in a private network namespace holding only
the loopback interface (`unshare --net`): Ray rewrites 127.0.0.1 to the host's outward address
unless loopback is all there is, and the namespace also keeps this cluster's ports apart from
any other Ray on the machine. The test stops exactly the processes it started, by process id;
never `ray stop`, which ends every Ray process on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

INSIDE = "LAYROT_TEST_PRIVATE_NETWORK"  # set in the copy of this test that runs in the namespace
GCS_PORT = 6379
NODE_READY = "Ray runtime started"      # what `ray start` prints once its node has joined
SPEC = """\
name: two-nodes
tasks: [fmnist-quick]
settings: [layca-sgd, sgd]
rho0: [3^-3, 3^-1]
resources: {cpus: 1}
max_failures: 0
"""
TRIALS, EPOCHS = 4, 2                   # the spec's grid; --smoke-test runs 2 epochs


def private_network_prefix() -> list[str] | None:
    """The command prefix that runs a program alone with a working loopback, or None."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)
    if not (unshare and ip):
        return None
    prefix = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    prefix += ["sh", "-c", f'{ip} link set lo up && exec "$@"', "sh"]
    probe = subprocess.run(prefix + ["true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``pid``, read from /proc; the start time
    tells a process from a later one that reuses its pid."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


class RayNode:
    """One `ray start --block` process: the node lives exactly as long as that process."""

    def __init__(self, name: str, args: list[str], temp_dir: str, env: dict, log_dir: Path):
        self.name, self.temp_dir = name, temp_dir
        self.log = log_dir / f"{name}.log"
        ray = Path(sys.executable).with_name("ray")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([str(ray), "start", "--block", f"--temp-dir={temp_dir}", *args],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while NODE_READY not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} node did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM makes `ray start --block` shut its node down; any process it had started
        that outlives it is then killed, by pid."""
        spawned = descendants(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(1)
        for pid, started in spawned:
            if start_time(pid) == started:
                os.kill(pid, signal.SIGKILL)

    def trial_dirs(self) -> list[str]:
        """Names of the trial working directories Tune made on this node (under its temp dir)."""
        return [p.name for p in Path(self.temp_dir).glob("session_*/artifacts/*/*/working_dirs/*")]


def node_args(first_port: int) -> list[str]:
    """A node's own resources (one CPU, so two concurrent trials need both nodes) and ports
    (the two nodes share one network)."""
    ports = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"]
    return ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000",
            "--disable-usage-stats",
            *(f"--{p}={first_port + i}" for i, p in enumerate(ports)),
            f"--min-worker-port={first_port + 100}", f"--max-worker-port={first_port + 199}"]


def rerun_in_private_network(test_id: str) -> None:
    prefix = private_network_prefix()
    if prefix is None:
        pytest.skip("needs a private network namespace: `unshare --net` and `ip` from util-linux/iproute2")
    proc = subprocess.run(prefix + [sys.executable, "-m", "pytest", test_id, "-q", "-p", "no:cacheprovider"],
                          env={**os.environ, INSIDE: "1"}, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, (
        f"the test did not pass inside its network namespace:\n{proc.stdout[-8000:]}{proc.stderr[-3000:]}")


@pytest.mark.slow
def test_smoke_sweep_runs_trials_on_both_nodes_and_fills_the_store(tmp_path):
    if os.environ.get(INSIDE) != "1":
        rerun_in_private_network(f"{__file__}::test_smoke_sweep_runs_trials_on_both_nodes_and_fills_the_store")
        return

    # Loopback-only cluster in a private namespace: no token needed; never join another cluster.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    spec = tmp_path / "two-nodes.yaml"
    spec.write_text(SPEC)
    store = tmp_path / "store"
    # Short temp dirs: Ray's socket paths under them must stay below the 107-byte limit.
    temp_dirs = [tempfile.mkdtemp(prefix="lr-head-"), tempfile.mkdtemp(prefix="lr-worker-")]
    nodes: list[RayNode] = []
    try:
        nodes.append(RayNode("head", ["--head", f"--port={GCS_PORT}", "--include-dashboard=false",
                                      *node_args(20000)], temp_dirs[0], env, tmp_path))
        nodes[0].wait_ready()
        nodes.append(RayNode("worker", [f"--address=127.0.0.1:{GCS_PORT}",
                                        *node_args(30000)], temp_dirs[1], env, tmp_path))
        nodes[1].wait_ready()

        sweep = subprocess.run(
            [sys.executable, "-m", "layrot.cli", "sweep", str(spec), "--store", str(store),
             "--address", f"127.0.0.1:{GCS_PORT}", "--smoke-test"],
            env=env, capture_output=True, text=True, timeout=600)
        assert sweep.returncode == 0, sweep.stdout[-5000:] + sweep.stderr[-5000:]
        assert f"finished: {TRIALS} completed, 0 diverged, 0 errored of {TRIALS} trials" in sweep.stdout

        trials = ds.dataset(store / "trials" / "two-nodes-smoke").to_table().to_pylist()
        epochs = ds.dataset(store / "epochs" / "two-nodes-smoke").to_table().to_pylist()
        rotation = ds.dataset(store / "rotation" / "two-nodes-smoke").to_table().to_pylist()

        # Where each trial ran: Tune makes a trial's working directory on the node running it.
        trial_ids = sorted(t["trial_id"] for t in trials)
        ran_on = {n.name: [t for t in trial_ids if any(f"_{t}_" in d for d in n.trial_dirs())] for n in nodes}
        assert sorted(ran_on["head"] + ran_on["worker"]) == trial_ids, ran_on
        assert ran_on["head"] and ran_on["worker"], f"all trials ran on one node: {ran_on}"
        print(f"trials per node: {ran_on}")
    finally:
        for node in reversed(nodes):
            node.stop()
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)

    # The store is complete: every trial finished all its epochs, with one rotation value per
    # kernel layer and epoch.
    assert len(trial_ids) == TRIALS
    assert {(t["status"], t["epochs_done"], t["epochs"]) for t in trials} == {("completed", EPOCHS, EPOCHS)}
    assert sorted((e["trial_id"], e["epoch"]) for e in epochs) == [(t, e) for t in trial_ids for e in range(1, EPOCHS + 1)]
    layers = {t["trial_id"]: t["num_layers"] for t in trials}
    assert min(layers.values()) >= 1
    expected = sorted((t, e, layer) for t in trial_ids for e in range(1, EPOCHS + 1) for layer in range(layers[t]))
    assert sorted((r["trial_id"], r["epoch"], r["layer"]) for r in rotation) == expected
    assert all(0.0 <= r["cosine_distance"] <= 2.0 for r in rotation)
