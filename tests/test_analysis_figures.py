import math

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import figures
from layrot.run import rate_label
from analysis import rank
from analysis.configurations import configurations, seeds_of
from analysis.load import load
from analysis.synthetic import write_synthetic_store

LAYERS, EPOCHS = 5, 8


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    store = tmp_path_factory.mktemp("figures") / "store"
    write_synthetic_store(str(store), "figs", tasks=("C10-CNN1", "C100-resnet"), epochs=EPOCHS, layers=LAYERS,
                          running=2)
    return load(str(store))


def panel_traces(fig, xaxis):
    return [t for t in fig.data if t.xaxis == xaxis and t.x is not None and t.x[0] is not None]


@pytest.fixture(scope="module")
def configs(results):
    return configurations(results.trials)


def test_rotation_curves_draw_each_best_configuration_with_viridis_layers(results, configs):
    fig = figures.rotation_curves(results, configs)
    best = configs[configs["best_in_setting"]]
    settings = figures.settings_in_order(best["setting"])
    tasks = sorted(best["task"].unique())
    assert isinstance(fig, go.Figure)
    for _, row in best.iterrows():
        index = settings.index(row["setting"]) * len(tasks) + tasks.index(row["task"]) + 1
        lines = panel_traces(fig, "x" if index == 1 else f"x{index}")
        assert len(lines) == LAYERS
        # Independent reference: the stored rows of the configuration's seeds, averaged, 0 at epoch 0.
        ids = seeds_of(results.trials, row)["trial_id"]
        rows = results.rotation[results.rotation["trial_id"].isin(ids) & (results.rotation["layer"] == LAYERS - 1)]
        np.testing.assert_allclose(lines[-1].y, np.r_[0.0, rows.groupby("epoch")["cosine_distance"].mean()])
        assert lines[0].line.color == "rgb(68, 1, 84)" and lines[-1].line.color == "rgb(253, 231, 37)"
        label = figures.setting_label(row["setting"])
        title = next(a.text for a in fig.layout.annotations if a.text.startswith(f"<b>{row['task']} · {label}<"))
        assert f"val {100 * row['val_acc_mean']:.1f}% · test {100 * row['test_acc_mean']:.1f}%" in title
        reference = best[(best["task"] == row["task"]) & (best["setting"] == "layca-sgd")]["test_acc_mean"].iloc[0]
        assert f"{100 * (row['test_acc_mean'] - reference):+.1f} vs best Layca-SGD" in title


def test_rotation_curves_downsample_for_drawing_only(results, configs):
    fig = figures.rotation_curves(results, configs, max_points=4)
    lines = panel_traces(fig, "x")
    assert all(len(t.x) == 4 and t.x[0] == 0 and t.x[-1] == EPOCHS for t in lines)


def test_heatmap_cells_are_seed_mean_test_accuracy_per_alpha_and_rho(results, configs):
    fig = figures.accuracy_heatmaps(configs)
    heat = fig.data[0]
    finished = results.trials[(results.trials["task"] == "C10-CNN1") & (results.trials["setting"] == "layca-sgd")
                              & results.trials["status"].isin(["completed", "diverged"])]
    for i, alpha in enumerate(heat.y):
        for j, rho in enumerate(heat.x):
            cell = [t.final_test_acc for t in finished.itertuples()
                    if f"{t.alpha:g}" == alpha and rate_label(t.rho0) == rho]
            expected = sum(cell) / len(cell) if cell else math.nan
            assert heat.z[i][j] == pytest.approx(expected, nan_ok=True)


def test_profiles_take_the_best_seed_mean_validation_at_each_value_with_error_bars(results, configs):
    fig = figures.accuracy_profiles(configs)
    line = next(t for t in fig.data if t.name == "C10-CNN1 · Layca-SGD" and t.xaxis == "x")
    trials = results.trials[(results.trials["task"] == "C10-CNN1") & (results.trials["setting"] == "layca-sgd")
                            & results.trials["status"].isin(["completed", "diverged"])]
    means = trials.groupby(["alpha", "rho0"]).agg(val=("final_val_acc", "mean"), test=("final_test_acc", "mean"),
                                                  std=("final_test_acc", "std")).reset_index()
    for alpha, test, bar in zip(line.x, line.y, line.error_y.array):
        chosen = means[means["alpha"] == alpha].sort_values("val").iloc[-1]
        assert test == pytest.approx(chosen["test"])
        assert bar == pytest.approx(0.0 if np.isnan(chosen["std"]) else chosen["std"])


def test_scatter_has_one_point_per_configuration_and_open_markers_for_unfit_ones(results, configs):
    corr = rank.correlations(configs, n_boot=50)
    fig = figures.rotation_vs_accuracy(configs, 0.99, corr)
    row = corr[(corr["task"] == "C100-resnet") & (corr["family"] == "all")
               & (corr["measure"] == "rotation_min_mean")].iloc[0]
    assert any(figures.correlation_text(row) in a.text for a in fig.layout.annotations)
    points = [t for t in fig.data if t.x is not None and t.x[0] is not None]
    filled = sum(len(t.x) for t in points if t.marker.symbol == "circle")
    assert filled == 2 * configs["fits"].sum()                    # two rotation measures per configuration
    assert sum(len(t.x) for t in points) == 2 * len(configs)


def test_parallel_coordinates_cover_finished_trials(results):
    fig = figures.parallel_coordinates(results)
    dims = {d.label: d for d in fig.data[0].dimensions}
    completed = results.trials[results.trials["status"].isin(["completed", "diverged"])]
    assert len(dims["test acc"].values) == len(completed)
    np.testing.assert_allclose(3 ** np.asarray(dims["ρ(0)"].values), completed["rho0"])


def test_training_curves_menu_lists_every_trial_with_its_epochs(results):
    fig = figures.training_curves(results, per_task=None)
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == len(results.trials)
    some = results.trials.iloc[3]
    label = f"{some['task']} · {figures.trial_label(some)} · {some['status']}"
    button = next(b for b in buttons if b.args[1]["title.text"].endswith(label))
    epochs = results.epochs[results.epochs["trial_id"] == some["trial_id"]].sort_values("epoch")
    assert button.args[0]["x"][0] == epochs["epoch"].tolist()
    np.testing.assert_allclose(button.args[0]["y"][1], epochs["val_acc"], atol=5e-5)


def test_training_curves_menu_keeps_each_settings_best_run_when_shortened(results):
    labels = [b.args[1]["title.text"] for b in figures.training_curves(results, per_task=8).layout.updatemenus[0].buttons]
    trials = results.trials
    for task in trials["task"].unique():
        assert sum(f"curves: {task} ·" in label for label in labels) == 8
        of_task = trials[trials["task"] == task]
        for _, best in of_task.loc[of_task.groupby("setting")["final_val_acc"].idxmax()].iterrows():
            assert any(label.endswith(f"{task} · {figures.trial_label(best)} · {best['status']}") for label in labels)


def test_figures_without_completed_trials_say_so(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(str(store), "live", tasks=("C10-CNN1",), n_trials=3, epochs=4, layers=3, running=3)
    live = load(str(store))
    none = configurations(live.trials)
    drawn = [figures.rotation_curves(live, none), figures.rotation_vs_accuracy(none, 0.99, rank.correlations(none)),
             figures.parallel_coordinates(live), figures.accuracy_heatmaps(none), figures.accuracy_profiles(none)]
    for fig in drawn:
        assert "no finished" in fig.layout.annotations[0].text.lower()
    assert len(figures.training_curves(live).layout.updatemenus[0].buttons) == 3


