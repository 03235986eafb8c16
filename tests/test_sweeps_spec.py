import itertools
import re
from pathlib import Path

import pytest
import yaml

from layrot.run import resolve
from layrot.tasks import PAPER_TASKS
from sweeps.spec import DEFAULT_RHO0, load_spec, parse_spec

SPECS = sorted(Path(__file__).resolve().parents[1].joinpath("sweeps").glob("*.yaml"))
PAPER_ALPHAS = [-0.8, -0.6, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]


def _spec(**over) -> dict:
    return {"tasks": ["C10-CNN1"], "settings": ["sgd"], **over}


def test_grid_is_the_product_of_the_axes():
    spec = parse_spec(
        _spec(tasks=["C10-CNN1", "tiny-CNN"], settings=["layca-sgd", "adam"], alpha=[-0.5, 0, 0.5],
              rho0=["3^-2", 0.5], seeds=[0, 1], epochs=3, train={"device": "cpu"}),
        default_name="g",
    )
    assert spec.num_trials == 2 * 2 * 3 * 2 * 2
    configs = spec.trial_configs()
    expected = [
        {"task": t, "setting": o, "alpha": a, "rho0": r, "seed": s, "epochs": 3, "device": "cpu"}
        for t, o, a, r, s in itertools.product(
            ["C10-CNN1", "tiny-CNN"], ["layca-sgd", "adam"], [-0.5, 0.0, 0.5], [1 / 9, 0.5], [0, 1]
        )
    ]
    assert configs == expected
    for c in configs:  # every grid point is a valid training config
        assert resolve(c).epochs == 3


def test_rho0_powers_of_three_and_the_default_grid():
    spec = parse_spec(_spec(rho0=["3^-3", "3^2..3^0", "3^-3.5", 0.1, 1e-3]), default_name="r")
    assert list(spec.rho0) == [3.0**-3, 9.0, 3.0, 1.0, 3.0**-3.5, 0.1, 1e-3]
    spec = parse_spec(_spec(), default_name="d")
    assert list(spec.rho0) == [3.0**k for k in range(-7, 3)] and DEFAULT_RHO0 == ["3^-7..3^2"]
    assert spec.alpha == (0.0,) and spec.seeds == (0,) and (spec.cpus, spec.gpus) == (1.0, 0.0)


def test_yaml_scientific_notation_is_a_number_and_quoted_numbers_are_refused(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text("tasks: [fmnist]\nsettings: [sgd]\nrho0: [1e-3, 3^-2]\n")
    assert list(load_spec(path).rho0) == [1e-3, 3.0**-2]
    path.write_text("tasks: [fmnist]\nsettings: [sgd]\nrho0: ['1e-3']\n")
    with pytest.raises(ValueError, match=re.escape("rho0: '1e-3' is not a rate")):
        load_spec(path)


def test_analysis_settings_are_pre_registered_in_the_spec_with_defaults():
    assert parse_spec(_spec(), default_name="a").analysis == {"min_train_acc": 0.99}
    assert parse_spec(_spec(analysis={"min_train_acc": 0.95}), default_name="a").analysis == {"min_train_acc": 0.95}


def test_smoke_keeps_two_values_per_axis_and_few_epochs():
    spec = parse_spec(_spec(settings=["sgd", "adam", "rmsprop"], alpha=[0, 0.1, 0.2]), default_name="big")
    smoke = spec.smoke()
    assert smoke.name == "big-smoke"
    assert smoke.num_trials == 1 * 2 * 2 * 2 * 1
    assert smoke.fixed == {"epochs": 2, "data_fraction": 0.05}
    assert parse_spec(_spec(epochs=1), default_name="one").smoke().fixed["epochs"] == 1


@pytest.mark.parametrize(
    "over, message",
    [
        ({"tasks": ["C10-CNN9"]}, "x.yaml: tasks: task='C10-CNN9' is not allowed: one of C10-CNN1"),
        ({"settings": ["sgd", "adamw"]}, "x.yaml: settings: setting='adamw' is not allowed: one of sgd, sgd-l2"),
        ({"settings": ["sgd+layca"]}, "x.yaml: settings: setting='sgd+layca' is not allowed: write 'layca-sgd'"),
        ({"settings": ["sgd_l2"]}, "setting='sgd_l2' is not allowed: write 'sgd-l2'"),
        ({"optimizers": ["sgd"]}, "x.yaml: optimizers: renamed: write 'settings'"),
        ({"alpha": [0.5, 1.5]}, "x.yaml: alpha: alpha=1.5 is not allowed: a number in [-1, 1]"),
        ({"alpha": [-1.01]}, "x.yaml: alpha: alpha=-1.01 is not allowed: a number in [-1, 1]"),
        ({"alpha": [True]}, "x.yaml: alpha: alpha=True is not allowed: a number in [-1, 1]"),
        ({"alpha": ["0.5"]}, "x.yaml: alpha: alpha='0.5' is not allowed: a number in [-1, 1]"),
        ({"rho0": [0.1, 0]}, "x.yaml: rho0: rho0=0.0 is not allowed: a finite number > 0"),
        ({"rho0": [-0.3]}, "x.yaml: rho0: rho0=-0.3 is not allowed: a finite number > 0"),
        ({"rho0": ["0.1"]}, "x.yaml: rho0: '0.1' is not a rate"),
        ({"rho0": [True]}, "x.yaml: rho0: True is not a rate"),
        ({"seeds": [0.5]}, "x.yaml: seeds: seed=0.5 is not allowed: an integer >= 0"),
        ({"rho0": ["3**-3"]}, "x.yaml: rho0: '3**-3' is not a rate"),
        ({"rho0": []}, "x.yaml: rho0: the grid is empty"),
        ({"tasks": []}, "x.yaml: tasks: the grid is empty"),
        ({"seeds": []}, "x.yaml: seeds: the grid is empty"),
        ({"alhpa": [0.1]}, "x.yaml: alhpa: unknown key (did you mean 'alpha'?)"),
        ({"epoch": 3}, "x.yaml: epoch: unknown key (did you mean 'epochs'?)"),
        ({"epochs": 0}, "x.yaml: epochs: epochs=0 is not allowed: an integer >= 1"),
        ({"epochs": True}, "x.yaml: epochs: epochs=True is not allowed: an integer >= 1"),
        ({"data_fraction": 2}, "x.yaml: data_fraction: data_fraction=2 is not allowed: a number in (0, 1]"),
        ({"train": {"devise": "cpu"}}, "x.yaml: train: unknown config key 'devise'"),
        ({"train": {"bf16": "yes"}}, "x.yaml: train: bf16='yes' is not allowed: true or false"),
        ({"train": {"alpha": 0.1}}, "x.yaml: train: ['alpha'] are set by their own spec keys"),
        ({"seeds": [1, 1]}, "x.yaml: seeds: duplicate value(s) 1"),
        ({"resources": {"cpus": 0}}, "x.yaml: resources: cpus=0 must be a number > 0"),
        ({"resources": {"gpus": 1.5}}, "x.yaml: resources: gpus=1.5 must be 0, a fraction"),
        ({"resources": {"gpu": 1}}, "x.yaml: resources: {'gpu': 1}: allowed keys are cpus, gpus"),
        ({"max_failures": -1}, "x.yaml: max_failures: -1 must be an integer >= 0"),
        ({"name": "my sweep"}, "x.yaml: name: sweep name 'my sweep' is not allowed"),
        ({"analysis": {"min_train_acc": 1.5}}, "x.yaml: analysis: min_train_acc=1.5 is not allowed: a number in [0, 1]"),
        ({"analysis": {"threshold": 0.9}}, "x.yaml: analysis: unknown analysis setting(s) ['threshold']"),
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
    bad.write_text("tasks: [C10-CNN1\nsettings: sgd\n")
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
        assert spec.tasks == PAPER_TASKS and list(spec.rho0) == paper_rates
    assert list(layca.alpha) == PAPER_ALPHAS and layca.settings == ("layca-sgd",)
    assert layca.num_trials == 5 * 13 * 10
    assert set(sgd.settings) == {"sgd", "sgd-l2"}
    assert set(adaptive.settings) == {f"{p}{o}" for o in ("adam", "rmsprop", "adagrad") for p in ("", "layca-")}


def test_yaml_booleans_and_quoted_numbers_are_refused_before_anything_runs(tmp_path):
    """`alpha: [yes]` once ran as alpha = 1.0 (every layer but the last frozen)."""
    for line, message in [("alpha: [yes]", "alpha: alpha=True is not allowed"),
                          ("epochs: on", "epochs: epochs=True is not allowed"),
                          ('rho0: ["0.1"]', "rho0: '0.1' is not a rate")]:
        path = tmp_path / "bad.yaml"
        path.write_text(f"tasks: [fmnist]\nsettings: [layca-sgd]\n{line}\n")
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            load_spec(path)
        assert "\n" not in str(info.value)
