"""The report's figures, each a ``plotly.graph_objects.Figure`` usable on its own in a notebook.

Figures of outcomes take the configuration table (:func:`analysis.configurations.configurations`:
seeds aggregated, error bars their spread); figures of single trials take the loaded
:class:`analysis.load.Results`. Hovering a point shows its configuration or trial. Curves are
down-sampled to at most ``max_points`` epochs for drawing only.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from analysis.configurations import seeds_of
from analysis.load import Results
from analysis.rank import ALL_FAMILIES, ROTATION_MEASURES, interval_text
from layrot.run import FINISHED, SETTINGS, rate_label

REFERENCE_SETTING = "layca-sgd"    # the paper's reference: settings are compared to its best

# Settings in the order the paper discusses them; others follow alphabetically.
_SETTING_ORDER = ["layca-sgd", "sgd", "sgd-l2", "layca-sgd-l2", "adam", "layca-adam", "rmsprop", "layca-rmsprop",
                  "adagrad", "layca-adagrad"]
_TASK_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]


def settings_in_order(settings) -> list[str]:
    """The distinct settings given, in the paper's order (unknown ones last, alphabetically)."""
    present = set(settings)
    return [s for s in _SETTING_ORDER if s in present] + sorted(present - set(_SETTING_ORDER))


def setting_colors(settings) -> dict[str, str]:
    """One colour per setting, stable across figures (by the paper's order)."""
    palette = qualitative.D3
    return {s: palette[i % len(palette)] for i, s in enumerate(settings_in_order(settings))}


def setting_label(setting: str) -> str:
    """A setting's name in figures ("layca-sgd" -> "Layca-SGD")."""
    known = SETTINGS.get(setting)
    return known.label if known else setting


def trial_label(trial: pd.Series | dict) -> str:
    """Short name of a configuration: setting and the hyper-parameters that vary."""
    return f"{setting_label(trial['setting'])} {hyperparameter_label(trial)}"


def hyperparameter_label(trial: pd.Series | dict) -> str:
    """e.g. "α=0 ρ(0)=3^-3"; alpha only where it was set, weight decay only where used."""
    known = SETTINGS.get(trial["setting"])
    alpha = f"α={trial['alpha']:g} " if (known and known.layca) or trial["alpha"] != 0 else ""
    wd = f" wd={trial['weight_decay']:g}" if trial["weight_decay"] else ""
    return f"{alpha}ρ(0)={rate_label(trial['rho0'])}{wd}"


def config_text(trial: pd.Series | dict) -> str:
    """The full config and outcome of a trial (a trials row) as hover text (HTML line breaks)."""
    lines = [f"<b>{trial['task']} · {trial_label(trial)}</b>",
             f"sweep {trial['sweep']} · trial {trial['trial_id']} · {trial['status']} "
             f"({trial['epochs_done']}/{trial['epochs']} epochs)",
             f"test {percent(trial['final_test_acc'])} · val {percent(trial['final_val_acc'])} · "
             f"train {percent(trial['final_train_acc'])}"]
    lines += [f"{k}: {html.escape(str(v))}" for k, v in sorted(trial["config"].items())]
    return "<br>".join(lines)


def hover_texts(trials: pd.DataFrame) -> list[str]:
    """:func:`config_text` of every row (rows as dicts: much faster than iterrows)."""
    return [config_text(t) for t in trials.to_dict("records")]


def percent(value: float) -> str:
    """An accuracy fraction as "92.1%" ("n/a" when missing)."""
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _downsample(n: int, max_points: int) -> np.ndarray:
    """Indices of at most max_points evenly spread items, first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def _empty(message: str, title: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 15}, x=0.5, y=0.5,
                       xref="paper", yref="paper")
    fig.update_layout(title=title, height=260, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def _axis_refs(fig: go.Figure, row: int, col: int) -> dict[str, str]:
    """The axis references of a subplot, e.g. {"xaxis": "x2", "yaxis": "y2"}: traces given as
    dicts with these are added in one cheap add_traces call (hundreds of lines per figure)."""
    axes = fig.get_subplot(row, col)
    return {"xaxis": axes.xaxis.plotly_name.replace("axis", ""), "yaxis": axes.yaxis.plotly_name.replace("axis", "")}


def configuration_text(row: pd.Series | dict) -> str:
    """A configuration row's outcome as hover text: seed means with their spread."""
    def spread(name):
        std = row[f"{name}_std"]
        return percent(row[f"{name}_mean"]) + ("" if not np.isfinite(std) else f" ± {100 * std:.1f}")

    return "<br>".join([
        f"<b>{row['task']} · {trial_label(row)}</b>",
        f"{int(row['seeds'])} seed(s)" + (f", {int(row['diverged'])} diverged" if row["diverged"] else ""),
        f"test {spread('test_acc')} · val {spread('val_acc')} · train {percent(row['train_acc_mean'])}",
        f"rotation mean {row['rotation_mean_mean']:.3f} · min {row['rotation_min_mean']:.3f}",
        "best of its setting (validation)" if row["best_in_setting"] else "",
    ])


def _layca_reference(configs: pd.DataFrame) -> dict[str, float]:
    """Per task, the seed-mean test accuracy of the best Layca-SGD configuration."""
    best = configs[configs["best_in_setting"] & (configs["setting"] == REFERENCE_SETTING)]
    return dict(zip(best["task"], best["test_acc_mean"]))


def rotation_curves(results: Results, configs: pd.DataFrame, max_points: int = 120) -> go.Figure:
    """Layer rotation curves of the best configuration of each (setting, task), paper style:
    one line per kernel layer, the mean over the configuration's seeds.

    Rows are settings, columns tasks; lines coloured with viridis from the first layer (purple)
    to the last (yellow); panel titles give validation and test accuracy (seed means) and the
    test difference to the task's best Layca-SGD. A cell without a configuration says so.
    """
    best = configs[configs["best_in_setting"]]
    if best.empty:
        return _empty("No finished configuration yet: nothing to draw.", "Layer rotation curves")
    settings = settings_in_order(best["setting"])
    tasks = sorted(best["task"].unique())
    cells = {(r["setting"], r["task"]): r for _, r in best.iterrows()}
    reference = _layca_reference(configs)
    titles = []
    for setting in settings:
        for task in tasks:
            row = cells.get((setting, task))
            if row is None:
                titles.append(f"{task} · {setting_label(setting)}: not run")
                continue
            versus = (f" ({100 * (row['test_acc_mean'] - reference[task]):+.1f} vs best Layca-SGD)"
                      if task in reference else "")
            titles.append(f"<b>{task} · {setting_label(setting)}</b><br>val {percent(row['val_acc_mean'])} · test "
                          f"{percent(row['test_acc_mean'])}{versus} · {hyperparameter_label(row)}")
    fig = make_subplots(rows=len(settings), cols=len(tasks), subplot_titles=titles, shared_yaxes=True,
                        vertical_spacing=0.5 / len(settings), horizontal_spacing=0.04)
    traces = []
    for (setting, task), row in cells.items():
        axes = _axis_refs(fig, settings.index(setting) + 1, tasks.index(task) + 1)
        rows = results.rows_of("rotation", seeds_of(results.trials, row))
        if rows.empty:
            fig.add_annotation(text="no rotation rows recorded", showarrow=False, xref=f"{axes['xaxis']} domain",
                               yref=f"{axes['yaxis']} domain", x=0.5, y=0.5)
            continue
        mean = rows.groupby(["epoch", "layer"])["cosine_distance"].mean().unstack("layer").sort_index()
        epochs = np.r_[0, mean.index.to_numpy()]
        distances = np.vstack([np.zeros(mean.shape[1]), mean.to_numpy()])
        names = rows.drop_duplicates("layer").sort_values("layer")["layer_name"].astype(str).tolist()
        keep = _downsample(len(epochs), max_points)
        colors = sample_colorscale("Viridis", list(np.linspace(0, 1, max(len(names), 2))))
        hover = configuration_text(row)
        for layer, name in enumerate(names):
            traces.append({
                "type": "scatter", **axes, "x": epochs[keep], "y": distances[keep, layer], "mode": "lines",
                "showlegend": False, "line": {"color": colors[layer], "width": 1.3},
                "hovertemplate": f"layer {layer} {name}<br>epoch %{{x}}: %{{y:.3f}}<extra>{hover}</extra>",
            })
    fig.add_traces(traces)
    fig.add_trace(go.Scatter(  # a colour bar explaining the line colours
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker={"colorscale": "Viridis", "cmin": 0, "cmax": 1, "color": [0], "showscale": True,
                "colorbar": {"title": {"text": "layer"}, "tickvals": [0, 1], "ticktext": ["first", "last"],
                             "len": 0.5, "thickness": 12}},
    ), row=1, col=1)
    fig.update_yaxes(range=[0, 1.05])
    fig.update_yaxes(title_text="cosine distance to init", col=1)
    fig.update_xaxes(title_text="epoch", row=len(settings))
    fig.update_annotations(font_size=11)
    fig.update_layout(title="Layer rotation of each setting's best configuration (by seed-mean validation "
                            "accuracy; mean over seeds)", height=140 + 230 * len(settings),
                      margin={"t": 120, "r": 110})
    return fig


def accuracy_heatmaps(configs: pd.DataFrame) -> go.Figure:
    """Seed-mean final test accuracy over the alpha x rho0 grid, one panel per task.

    Per task the setting with the largest alpha x rho0 grid is drawn (Layca-SGD in the paper's
    sweeps). Finished trials only (completed or diverged).
    """
    panels = []
    for task, of_task in configs.groupby("task"):
        sizes = of_task.groupby("setting").agg(alphas=("alpha", "nunique"), rhos=("rho0", "nunique"))
        sizes = sizes[(sizes["alphas"] > 1) & (sizes["rhos"] > 1)]
        if not sizes.empty:
            setting = (sizes["alphas"] * sizes["rhos"]).idxmax()
            panels.append((task, setting, of_task[of_task["setting"] == setting]))
    if not panels:
        why = ("no finished configuration yet" if configs.empty
               else "no setting of any task was run over more than one α and more than one ρ(0)")
        return _empty(f"No α × ρ(0) grid to draw: {why}.", "Test accuracy over α × ρ(0)")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{t} · {setting_label(s)}" for t, s, _ in panels],
                        horizontal_spacing=0.1)
    for col, (task, setting, grid) in enumerate(panels, start=1):
        z = grid.pivot(index="alpha", columns="rho0", values="test_acc_mean")
        n = grid.pivot(index="alpha", columns="rho0", values="seeds")
        fig.add_trace(go.Heatmap(
            z=z.to_numpy(), x=[rate_label(r) for r in z.columns], y=[f"{a:g}" for a in z.index],
            customdata=n.to_numpy(), colorscale="Viridis", zmin=np.nanmin(z.to_numpy()), zmax=np.nanmax(z.to_numpy()),
            colorbar={"x": fig.get_subplot(1, col).xaxis.domain[1] + 0.005, "xanchor": "left", "len": 0.9,
                      "thickness": 10, "tickformat": ".1%"},
            hovertemplate=f"{task} · {setting_label(setting)}<br>α=%{{y}}, ρ(0)=%{{x}}<br>test %{{z:.1%}} "
                          "(mean of %{customdata} seed(s))<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(title_text="ρ(0)", type="category", row=1, col=col)
        fig.update_yaxes(title_text="α" if col == 1 else None, type="category", row=1, col=col)
    fig.update_layout(title="Final test accuracy (seed mean) over α (layer-wise rate profile) × ρ(0) (initial rate); "
                            "blank cells were not run", height=430)
    return fig


def accuracy_profiles(configs: pd.DataFrame) -> go.Figure:
    """Test accuracy against alpha and against rho0, one line per (task, setting), with the
    seed spread (standard deviation) as error bars.

    At each value the configuration with the best seed-mean validation accuracy over the other
    parameter is taken (the paper's selection rule). Colours are settings, dashes are tasks.
    """
    if configs.empty:
        return _empty("No finished configuration yet: nothing to draw.", "Test accuracy against α and ρ(0)")
    colors = setting_colors(configs["setting"])
    tasks = sorted(configs["task"].unique())
    fig = make_subplots(rows=1, cols=2, subplot_titles=["against α (best ρ(0) at each α)",
                                                        "against ρ(0) (best α at each ρ(0))"])
    in_legend = set()
    for col, param in ((1, "alpha"), (2, "rho0")):
        drawn = 0
        for (task, setting), group in configs.dropna(subset=["val_acc_mean"]).groupby(["task", "setting"]):
            if group[param].nunique() < 2:
                continue
            chosen = group.loc[group.groupby(param)["val_acc_mean"].idxmax()].sort_values(param)
            drawn += 1
            group_name = f"{task} · {setting}"
            fig.add_trace(go.Scatter(
                x=chosen[param], y=chosen["test_acc_mean"], mode="lines+markers",
                error_y={"type": "data", "array": chosen["test_acc_std"].fillna(0).to_numpy(), "visible": True,
                         "thickness": 1, "width": 3},
                name=f"{task} · {setting_label(setting)}", legendgroup=group_name, showlegend=group_name not in in_legend,
                line={"color": colors[setting], "dash": _TASK_DASHES[tasks.index(task) % len(_TASK_DASHES)]},
                hovertext=[configuration_text(r) for r in chosen.to_dict("records")], hoverinfo="text",
            ), row=1, col=col)
            in_legend.add(group_name)
        if not drawn:
            axes = _axis_refs(fig, 1, col)
            fig.add_annotation(text=f"no setting was run at more than one {'α' if param == 'alpha' else 'ρ(0)'}",
                               showarrow=False, xref=f"{axes['xaxis']} domain", yref=f"{axes['yaxis']} domain",
                               x=0.5, y=0.5)
    rhos = sorted(configs["rho0"].unique())
    fig.update_xaxes(title_text="α", row=1, col=1)
    fig.update_xaxes(title_text="ρ(0)", type="log", tickvals=rhos, ticktext=[rate_label(r) for r in rhos],
                     row=1, col=2)
    fig.update_yaxes(title_text="final test accuracy (seed mean ± std)", tickformat=".1%", col=1)
    fig.update_yaxes(tickformat=".1%", col=2)
    fig.update_layout(title="Final test accuracy against α and ρ(0); error bars: seed standard deviation",
                      height=460)
    return fig


def rotation_vs_accuracy(configs: pd.DataFrame, min_train_acc: float, correlation: pd.DataFrame) -> go.Figure:
    """Final rotation against test accuracy, one point per configuration (seed means, error
    bars the seed standard deviation), one row of panels per task.

    Filled markers: configurations that fit their training data (in the correlation, given in
    each panel's title for all optimizer families pooled); open markers: below ``min_train_acc``.
    """
    if configs.empty:
        return _empty("No finished configuration yet: nothing to draw.", "Final rotation against test accuracy")
    colors = setting_colors(configs["setting"])
    tasks = sorted(configs["task"].unique())
    titles = []
    for task in tasks:
        for measure, label in ROTATION_MEASURES.items():
            row = correlation[(correlation["task"] == task) & (correlation["family"] == ALL_FAMILIES)
                              & (correlation["measure"] == measure)].iloc[0]
            titles.append(f"{task} · {label}<br>{correlation_text(row)}")
    fig = make_subplots(rows=len(tasks), cols=len(ROTATION_MEASURES), subplot_titles=titles,
                        vertical_spacing=0.4 / len(tasks), horizontal_spacing=0.06)
    traces = []
    for r, task in enumerate(tasks, start=1):
        of_task = configs[configs["task"] == task]
        for (setting, fits), group in of_task.groupby(["setting", "fits"]):
            hover = [configuration_text(x) for x in group.to_dict("records")]
            for c, measure in enumerate(ROTATION_MEASURES, start=1):
                traces.append({
                    "type": "scatter", **_axis_refs(fig, r, c), "x": group[measure].to_numpy(),
                    "y": group["test_acc_mean"].to_numpy(), "mode": "markers", "name": setting_label(setting),
                    "error_x": {"type": "data", "array": group[measure.removesuffix("_mean") + "_std"].fillna(0)
                                .to_numpy(), "thickness": 1, "width": 2},
                    "error_y": {"type": "data", "array": group["test_acc_std"].fillna(0).to_numpy(),
                                "thickness": 1, "width": 2},
                    "legendgroup": setting, "showlegend": False,
                    "marker": {"color": colors[setting], "size": 7, "opacity": 0.85,
                               "symbol": "circle" if fits else "circle-open"},
                    "hovertext": hover, "hoverinfo": "text",
                })
    legend = [(setting_label(s), colors[s], "circle") for s in colors]
    legend.append((f"open: seed-mean train acc < {percent(min_train_acc)}<br>(not in correlation)", "#777",
                   "circle-open"))
    for name, color, symbol in legend:  # legend-only entries, in the paper's order
        traces.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": name,
                       "legendgroup": name, "marker": {"color": color, "size": 8, "symbol": symbol},
                       "hoverinfo": "skip"})
    fig.add_traces(traces)
    fig.update_xaxes(range=[-0.03, 1.05])
    for c, label in enumerate(ROTATION_MEASURES.values(), start=1):
        fig.update_xaxes(title_text=f"final {label}", row=len(tasks), col=c)
    fig.update_yaxes(title_text="test accuracy (seed mean)", tickformat=".1%", col=1)
    fig.update_yaxes(tickformat=".1%")
    fig.update_annotations(font_size=12)
    fig.update_layout(title=f"Final layer rotation against test accuracy, one point per configuration "
                            f"(correlations over configurations with seed-mean train accuracy ≥ "
                            f"{percent(min_train_acc)}, all optimizers)",
                      height=120 + 330 * len(tasks), margin={"t": 120})
    return fig


def correlation_text(row: pd.Series) -> str:
    """'Kendall τ=0.52 [0.30, 0.73] · Spearman r_s=0.69 · 21 configurations' for one row of
    :func:`analysis.rank.correlations` (or why there is no number)."""
    if not np.isfinite(row["kendall"]):
        return interval_text(row, "kendall")
    return (f"Kendall τ={interval_text(row, 'kendall')} · Spearman r_s={row['spearman']:.2f}"
            f" · {row['n']} configurations")


def parallel_coordinates(results: Results) -> go.Figure:
    """Hyper-parameters, final rotation and test accuracy of every finished trial."""
    done = results.trials[results.trials["status"].isin(FINISHED)]
    if done.empty:
        return _empty("No finished trial yet: nothing to draw.", "Parallel coordinates")
    tasks = sorted(done["task"].unique())
    settings = settings_in_order(done["setting"])
    rhos = sorted(done["rho0"].unique())
    dims = [
        {"label": "task", "values": done["task"].map(tasks.index), "tickvals": list(range(len(tasks))),
         "ticktext": tasks},
        {"label": "setting", "values": done["setting"].map(settings.index),
         "tickvals": list(range(len(settings))), "ticktext": [setting_label(x) for x in settings]},
        {"label": "α", "values": done["alpha"]},
        {"label": "ρ(0)", "values": np.log(done["rho0"]) / np.log(3),
         "tickvals": [math.log(r, 3) for r in rhos], "ticktext": [rate_label(r) for r in rhos]},
        {"label": "weight decay", "values": done["weight_decay"]},
        {"label": "rotation (mean)", "values": done["rotation_mean"], "range": [0, 1]},
        {"label": "rotation (min)", "values": done["rotation_min"], "range": [0, 1]},
        {"label": "train acc", "values": done["final_train_acc"]},
        {"label": "test acc", "values": done["final_test_acc"]},
    ]
    fig = go.Figure(go.Parcoords(
        line={"color": done["final_test_acc"], "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": {"text": "test acc"}, "tickformat": ".1%"}},
        dimensions=dims,
    ))
    fig.update_layout(title="Hyper-parameters, rotation and accuracy of every finished trial "
                            "(drag along an axis to filter)", height=500, margin={"l": 80, "r": 80, "t": 90})
    return fig


def training_curves(results: Results, per_task: int | None = 40, max_points: int = 100) -> go.Figure:
    """Training, validation and test accuracy and training loss of one trial, chosen from a
    drop-down menu.

    Per task the menu lists each setting's best run (by validation accuracy), then the other
    runs by validation accuracy, up to ``per_task`` entries (None: every trial; the menu
    carries each listed trial's curves, so the page grows with it).
    """
    trials = results.trials.sort_values("final_val_acc", ascending=False, na_position="last")
    if per_task is not None:
        leaders = trials.drop_duplicates(["task", "setting"])
        trials = pd.concat([leaders, trials.drop(leaders.index)]).groupby("task", sort=False).head(per_task)
    trials = trials.sort_values(["task", "final_val_acc"], ascending=[True, False], na_position="last")
    epochs = results.rows_of("epochs", trials).sort_values("epoch")
    by_trial = dict(list(epochs.groupby(["sweep", "trial_id"], observed=True)))
    series = ("train_acc", "val_acc", "test_acc", "train_loss")
    buttons = []
    for trial in trials.to_dict("records"):
        curve = by_trial.get((trial["sweep"], trial["trial_id"]))
        if curve is None:
            continue
        keep = _downsample(len(curve), max_points)
        x = curve["epoch"].to_numpy()[keep].tolist()
        ys = [np.round(curve[s].to_numpy()[keep], 4).tolist() for s in series]
        title = f"{trial['task']} · {trial_label(trial)} · {trial['status']}"
        hover = f"epoch %{{x}}: %{{y:.4f}}<extra>{config_text(trial)}</extra>"
        buttons.append({"label": f"{title} · val {percent(trial['final_val_acc'])}", "method": "update",
                        "args": [{"x": [x] * len(series), "y": ys, "hovertemplate": [hover] * len(series)},
                                 {"title.text": f"Training curves: {title}"}]})
    if not buttons:
        return _empty("No epochs recorded yet.", "Training curves")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "training loss"], horizontal_spacing=0.08)
    first = buttons[0]["args"][0]
    for i, (name, color) in enumerate(zip(("train", "validation", "test", "train loss"),
                                          ("#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"))):
        fig.add_trace(go.Scatter(x=first["x"][i], y=first["y"][i], hovertemplate=first["hovertemplate"][i],
                                 name=name, mode="lines", line={"color": color}),
                      row=1, col=1 if i < 3 else 2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, row=1, col=2)
    fig.update_layout(
        title=buttons[0]["args"][1]["title.text"], height=480, margin={"t": 140},
        updatemenus=[{"buttons": buttons, "x": 0, "xanchor": "left", "y": 1.22, "yanchor": "top",
                      "showactive": True}],
    )
    return fig
