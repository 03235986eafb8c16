import itertools
import re
from pathlib import Path

import pytest
import yaml

from sweeps.spec import DEFAULT_RHO0, load_spec, parse_rho0, parse_spec, split_optimizer, trial_config
from trainables.config import resolve

SPECS = sorted(Path(__file__).resolve().parents[1].joinpath("sweeps").glob("*.yaml"))
PAPER_ALPHAS = [-0.8, -0.6, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
PAPER_TASKS = ["C10-CNN1", "C100-resnet", "tiny-CNN", "C10-CNN2", "C100-WRN"]


def _spec(**over) -> dict:
    return {"tasks": ["C10-CNN1"], "optimizers": ["sgd"], **over}


def test_grid_is_the_product_of_the_axes():
    spec = parse_spec(
        _spec(tasks=["C10-CNN1", "tiny-CNN"], optimizers=["sgd+layca", "adam"], alpha=[-0.5, 0, 0.5],
              rho0=["3^-2", 0.5], seeds=[0, 1], epochs=3, train={"device": "cpu"}),
        default_name="g",
    )
    assert spec.num_trials == 2 * 2 * 3 * 2 * 2
    configs = spec.trial_configs()
    expected = [
        {"task": t, "optimizer": o, "layca": l, "alpha": a, "rho0": r, "seed": s, "epochs": 3, "device": "cpu"}
        for t, (o, l), a, r, s in itertools.product(
            ["C10-CNN1", "tiny-CNN"], [("sgd", True), ("adam", False)], [-0.5, 0.0, 0.5], [1 / 9, 0.5], [0, 1]
        )
    ]
    assert configs == expected
    for c in configs:  # every grid point is a valid training config
        assert resolve(c).num_epochs == 3


def test_rho0_powers_of_three():
    assert parse_rho0("3^-3") == [3.0**-3]
    assert parse_rho0("3^-7..3^2") == [3.0**k for k in range(-7, 3)]
    assert parse_rho0("3^2..3^0") == [9.0, 3.0, 1.0]
    assert parse_rho0(0.1) == [0.1] and parse_rho0("1e-3") == [1e-3]
    spec = parse_spec(_spec(), default_name="d")
    assert list(spec.rho0) == [3.0**k for k in range(-7, 3)] and DEFAULT_RHO0 == ["3^-7..3^2"]
    assert spec.alpha == (0.0,) and spec.seeds == (0,) and (spec.cpus, spec.gpus) == (1.0, 0.0)


def test_optimizer_entries_split_into_optimizer_and_layca():
    assert split_optimizer("adagrad+layca") == ("adagrad", True)
    assert split_optimizer("sgd_l2") == ("sgd_l2", False)
    assert trial_config({"optimizer": "sgd+layca", "_fail_once_at_epoch": 2}) == {
        "optimizer": "sgd", "layca": True, "_fail_once_at_epoch": 2}


def test_smoke_keeps_two_values_per_axis_and_few_epochs():
    spec = parse_spec(_spec(optimizers=["sgd", "adam", "rmsprop"], alpha=[0, 0.1, 0.2]), default_name="big")
    smoke = spec.smoke()
    assert smoke.name == "big-smoke"
    assert smoke.num_trials == 1 * 2 * 2 * 2 * 1
    assert smoke.fixed == {"epochs": 2, "data_fraction": 0.05}
    assert parse_spec(_spec(epochs=1), default_name="one").smoke().fixed["epochs"] == 1


@pytest.mark.parametrize(
    "over, message",
    [
        ({"tasks": ["C10-CNN9"]}, "x.yaml: tasks: unknown task 'C10-CNN9'"),
        ({"optimizers": ["sgd", "adamw"]}, "x.yaml: optimizers: unknown optimizer 'adamw'; allowed: sgd, sgd+layca"),
        ({"optimizers": ["layca+sgd"]}, "unknown optimizer 'layca+sgd'"),
        ({"alpha": [0.5, 1.5]}, "x.yaml: alpha: alpha=1.5 is outside [-1, 1]"),
        ({"alpha": [-1.01]}, "x.yaml: alpha: alpha=-1.01 is outside [-1, 1]"),
        ({"rho0": [0.1, 0]}, "x.yaml: rho0: rho0=0.0 must be a finite number > 0"),
        ({"rho0": [-0.3]}, "x.yaml: rho0: rho0=-0.3 must be a finite number > 0"),
        ({"rho0": ["3**-3"]}, "x.yaml: rho0: '3**-3' is not a rate"),
        ({"rho0": []}, "x.yaml: rho0: the grid is empty"),
        ({"tasks": []}, "x.yaml: tasks: the grid is empty"),
        ({"seeds": []}, "x.yaml: seeds: the grid is empty"),
        ({"alhpa": [0.1]}, "x.yaml: alhpa: unknown key (did you mean 'alpha'?)"),
        ({"epoch": 3}, "x.yaml: epoch: unknown key (did you mean 'epochs'?)"),
        ({"epochs": 0}, "x.yaml: epochs: epochs=0 must be an integer >= 1"),
        ({"data_fraction": 2}, "x.yaml: data_fraction: data_fraction=2 must be in (0, 1]"),
        ({"train": {"devise": "cpu"}}, "x.yaml: train: unknown config key(s) ['devise']"),
        ({"train": {"alpha": 0.1}}, "x.yaml: train: ['alpha'] are set by their own spec keys"),
        ({"seeds": [1, 1]}, "x.yaml: seeds: duplicate value(s) 1"),
        ({"resources": {"cpus": 0}}, "x.yaml: resources: cpus=0 must be a number > 0"),
        ({"resources": {"gpus": 1.5}}, "x.yaml: resources: gpus=1.5 must be 0, a fraction"),
        ({"resources": {"gpu": 1}}, "x.yaml: resources: {'gpu': 1}: allowed keys are cpus, gpus"),
        ({"max_failures": -1}, "x.yaml: max_failures: -1 must be an integer >= 0"),
        ({"name": "my sweep"}, "x.yaml: name: sweep name 'my sweep' is not allowed"),
    ],
)
def test_invalid_specs_fail_with_one_line_naming_the_field(over, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_spec(_spec(**over), source="x.yaml", default_name="x")
    assert "\n" not in str(info.value)


def test_spec_files_missing_or_malformed(tmp_path):
    with pytest.raises(FileNotFoundError, match="spec file"):
        load_spec(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [C10-CNN1\noptimizers: sgd\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- C10-CNN1\n")
    with pytest.raises(ValueError, match="a spec is a YAML mapping"):
        load_spec(listy)
    ok = tmp_path / "mine.yaml"
    ok.write_text(yaml.safe_dump(_spec()))
    assert load_spec(ok).name == "mine"


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.num_trials == len(spec.trial_configs()) > 0


def test_paper_specs_hold_the_papers_grids():
    layca, sgd, adaptive = (load_spec(SPECS[0].with_name(f"paper-{n}.yaml")) for n in ("layca", "sgd", "adaptive"))
    paper_rates = [3.0**k for k in range(-7, 3)]
    for spec in (layca, sgd, adaptive):
        assert list(spec.tasks) == PAPER_TASKS and list(spec.rho0) == paper_rates
    assert list(layca.alpha) == PAPER_ALPHAS and layca.optimizers == ("sgd+layca",)
    assert layca.num_trials == 5 * 13 * 10
    assert set(sgd.optimizers) == {"sgd", "sgd_l2"}
    assert {split_optimizer(o) for o in adaptive.optimizers} == {
        (o, l) for o in ("adam", "rmsprop", "adagrad") for l in (False, True)}
