"""The launch-time checks, without starting Ray."""
import os

import pytest

from sweeps.launch import check_resources, check_store_reachable, is_local_path, tune_path
from sweeps.spec import parse_spec

DRIVER = {"127.0.0.1", "10.0.0.5"}


def _spec(**resources):
    return parse_spec({"tasks": ["C10-CNN1"], "settings": ["sgd"], "resources": resources}, default_name="r")


def test_tune_state_lives_under_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tune_path("results/quick") == os.path.join(str(tmp_path), "results/quick/_tune")
    assert tune_path("s3://bucket/layrot/") == "s3://bucket/layrot/_tune"
    assert tune_path("s3://b/layrot?endpoint_override=127.0.0.1:9000") == "s3://b/layrot/_tune?endpoint_override=127.0.0.1:9000"
    assert is_local_path("results") and is_local_path("file:///data/x") and not is_local_path("s3://b/x")


def test_local_store_is_refused_when_nodes_live_on_other_hosts():
    with pytest.raises(ValueError, match=r"--store 'results' is a local path, but the cluster has nodes on "
                                         r"other hosts \(10\.0\.0\.7, 10\.0\.0\.9\)"):
        check_store_reachable("results", ["10.0.0.5", "10.0.0.9", "10.0.0.7"], DRIVER)
    with pytest.raises(ValueError, match="local path"):
        check_store_reachable("file:///shared/results", ["10.0.0.9"], DRIVER)


@pytest.mark.parametrize(
    "store, nodes",
    [
        ("results", ["10.0.0.5", "10.0.0.5", "127.0.0.1"]),  # every node on the driver's host
        ("s3://bucket/layrot", ["10.0.0.5", "10.0.0.9"]),    # a URI every node can reach
        ("gs://bucket/layrot", ["10.0.0.8"]),
    ],
)
def test_reachable_stores_pass(store, nodes):
    check_store_reachable(store, nodes, DRIVER)


def test_resources_must_fit_one_node():
    nodes = [{"Resources": {"CPU": 2.0}}, {"Resources": {"CPU": 8.0, "GPU": 1.0}}]
    check_resources(_spec(cpus=4, gpus=0.5), nodes)
    with pytest.raises(ValueError, match=r"asks 1 CPU and 0.5 GPU per trial, but no node .* \(largest: 2 CPU, 0 GPU\)"):
        check_resources(_spec(gpus=0.5), nodes[:1])
    with pytest.raises(ValueError, match=r"asks 16 CPU and 0 GPU per trial"):
        check_resources(_spec(cpus=16), nodes)


def test_an_autoscaling_cluster_only_warns_of_missing_resources():
    cpu_head = [{"Resources": {"CPU": 2.0}}]  # GPU workers not started yet
    assert check_resources(_spec(cpus=4, gpus=0.5), cpu_head + [{"Resources": {"CPU": 8.0, "GPU": 1.0}}],
                           autoscaling=True) is None
    warning = check_resources(_spec(gpus=0.5), cpu_head, autoscaling=True)
    assert warning.startswith("spec 'r' asks 1 CPU and 0.5 GPU per trial") and "autoscaler" in warning


def test_cuda_trials_need_a_cuda_device_and_a_gpu_share(monkeypatch):
    from ray._private import accelerators

    from sweeps.launch import check_devices

    def spec(device: str, **resources):
        return parse_spec({"tasks": ["fmnist-quick"], "settings": ["sgd"], "train": {"device": device},
                           "resources": resources}, default_name="g")

    class Manager:
        count = 0

        @classmethod
        def get_current_node_num_accelerators(cls):
            return cls.count

    monkeypatch.setattr(accelerators, "get_accelerator_manager_for_resource", lambda name: Manager)
    check_devices(spec("cpu"))
    check_devices(spec("auto"))            # auto falls back to the CPU
    with pytest.raises(ValueError, match=r"train.device='cuda:0', but this machine has no CUDA device"):
        check_devices(spec("cuda:0", gpus=1))
    Manager.count = 1
    check_devices(spec("cuda", gpus=0.5))
    with pytest.raises(ValueError, match=r"train.device='cuda' needs a GPU per trial; set resources: \{gpus: N\}"):
        check_devices(spec("cuda"))
