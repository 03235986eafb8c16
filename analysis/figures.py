"""The report's figures, each a ``plotly.graph_objects.Figure`` usable on its own in a notebook.

Every function takes the loaded :class:`analysis.load.Results`. Hovering a trial shows its full
config. Curves are down-sampled to at most ``max_points`` epochs for drawing only.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from analysis.load import Results
from analysis.stats import ROTATION_SUMMARIES, best_configs, correlations, fitted
from layrot.run import MIN_TRAIN_ACC, SETTINGS, rate_label

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
    """e.g. "α=0 ρ0=3^-3"; alpha only where it was set, weight decay only where used."""
    alpha = f"α={trial['alpha']:g} " if trial["layca"] or trial["alpha"] != 0 else ""
    wd = f" wd={trial['weight_decay']:g}" if trial["weight_decay"] else ""
    return f"{alpha}ρ0={rate_label(trial['rho0'])}{wd}"


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


def _rotation_matrices(results: Results, trials: pd.DataFrame) -> dict[tuple[str, str], tuple]:
    """Per (sweep, trial_id) of `trials`: epochs with 0 prepended, distances [epoch, layer]
    (0 at epoch 0) and layer names; only these trials' rotation rows are read."""
    out = {}
    for key, group in results.rows_of("rotation", trials).groupby(["sweep", "trial_id"], observed=True):
        epochs = np.unique(group["epoch"].to_numpy())
        layer = group["layer"].to_numpy()
        distances = np.zeros((len(epochs) + 1, layer.max() + 1))
        distances[1 + np.searchsorted(epochs, group["epoch"].to_numpy()), layer] = group["cosine_distance"]
        names = group.drop_duplicates("layer").sort_values("layer")["layer_name"].astype(str).tolist()
        out[key] = (np.r_[0, epochs], distances, names)
    return out


def rotation_curves(results: Results, max_points: int = 120) -> go.Figure:
    """Layer rotation curves of the best configuration of each (setting, task), paper style.

    Rows are settings, columns tasks; one line per kernel layer coloured with viridis from the
    first layer (purple) to the last (yellow); panel titles give the test accuracy and its
    difference to the task's best Layca run.
    """
    best = best_configs(results.trials)
    if best.empty:
        return _empty("No completed trials yet.", "Layer rotation curves")
    settings = settings_in_order(best["setting"])
    tasks = sorted(best["task"].unique())
    cells = {(r["setting"], r["task"]): r for _, r in best.iterrows()}
    titles = []
    for setting in settings:
        for task in tasks:
            trial = cells.get((setting, task))
            if trial is None:
                titles.append("")
                continue
            delta = trial["delta_vs_layca"]
            versus = "" if not np.isfinite(delta) else f" ({100 * delta:+.1f} vs best Layca)"
            titles.append(f"<b>{task} · {setting_label(setting)}</b><br>test {percent(trial['final_test_acc'])}{versus}"
                          f" · {hyperparameter_label(trial)}")
    fig = make_subplots(rows=len(settings), cols=len(tasks), subplot_titles=titles, shared_yaxes=True,
                        vertical_spacing=0.5 / len(settings), horizontal_spacing=0.04)
    curves = _rotation_matrices(results, best)
    traces = []
    for (setting, task), trial in cells.items():
        if (trial["sweep"], trial["trial_id"]) not in curves:
            continue
        axes = _axis_refs(fig, settings.index(setting) + 1, tasks.index(task) + 1)
        epochs, distances, names = curves[(trial["sweep"], trial["trial_id"])]
        keep = _downsample(len(epochs), max_points)
        colors = sample_colorscale("Viridis", list(np.linspace(0, 1, max(len(names), 2))))
        hover = config_text(trial)
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
    fig.update_yaxes(title_text="cosine distance", col=1)
    fig.update_xaxes(title_text="epoch", row=len(settings))
    fig.update_annotations(font_size=11)
    fig.update_layout(title="Layer rotation curves of the best configuration per setting (chosen by "
                            "validation accuracy)", height=140 + 230 * len(settings),
                      margin={"t": 120, "r": 110})
    return fig


def accuracy_heatmaps(results: Results) -> go.Figure:
    """Mean final test accuracy over the alpha x rho0 grid, one panel per task.

    Per task the setting with the largest alpha x rho0 grid is drawn (Layca-SGD in the paper's
    sweeps). Finished trials only (completed or diverged); seeds are averaged.
    """
    finished = results.trials[results.trials["status"].isin(["completed", "diverged"])]
    panels = []
    for task, of_task in finished.groupby("task"):
        sizes = of_task.groupby("setting").agg(alphas=("alpha", "nunique"), rhos=("rho0", "nunique"))
        sizes = sizes[(sizes["alphas"] > 1) & (sizes["rhos"] > 1)]
        if not sizes.empty:
            setting = (sizes["alphas"] * sizes["rhos"]).idxmax()
            panels.append((task, setting, of_task[of_task["setting"] == setting]))
    if not panels:
        return _empty("No task has an alpha x rho0 grid in this store.", "Test accuracy over alpha x rho(0)")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{t} · {s}" for t, s, _ in panels],
                        horizontal_spacing=0.1)
    for col, (task, setting, trials) in enumerate(panels, start=1):
        grid = trials.groupby(["alpha", "rho0"])["final_test_acc"].agg(["mean", "size"]).reset_index()
        z = grid.pivot(index="alpha", columns="rho0", values="mean")
        n = grid.pivot(index="alpha", columns="rho0", values="size")
        x = [rate_label(r) for r in z.columns]
        fig.add_trace(go.Heatmap(
            z=z.to_numpy(), x=x, y=[f"{a:g}" for a in z.index], customdata=n.to_numpy(),
            colorscale="Viridis", zmin=np.nanmin(z.to_numpy()), zmax=np.nanmax(z.to_numpy()),
            colorbar={"x": fig.get_subplot(1, col).xaxis.domain[1] + 0.005, "xanchor": "left", "len": 0.9,
                      "thickness": 10, "tickformat": ".0%"},
            hovertemplate=f"{task} · {setting_label(setting)}<br>α=%{{y}}, ρ0=%{{x}}<br>test %{{z:.1%}} "
                          "(mean of %{customdata} trial(s))<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(title_text="ρ(0)", type="category", row=1, col=col)
        fig.update_yaxes(title_text="α" if col == 1 else None, type="category", row=1, col=col)
    fig.update_layout(title="Final test accuracy over α (layer-wise rate profile) × ρ(0) (initial rate)",
                      height=430)
    return fig


def accuracy_profiles(results: Results) -> go.Figure:
    """Test accuracy against alpha and against rho0, one line per (task, setting).

    At each value the trial with the best validation accuracy over the other parameter and the
    seeds is taken (the paper's selection rule). Colours are settings, dashes are tasks.
    """
    finished = results.trials[results.trials["status"].isin(["completed", "diverged"])]
    finished = finished.dropna(subset=["final_val_acc"])
    if finished.empty:
        return _empty("No finished trials yet.", "Test accuracy against α and ρ(0)")
    colors = setting_colors(finished["setting"])
    tasks = sorted(finished["task"].unique())
    fig = make_subplots(rows=1, cols=2, subplot_titles=["against α (best ρ(0) at each α)",
                                                        "against ρ(0) (best α at each ρ(0))"])
    for col, param in ((1, "alpha"), (2, "rho0")):
        for (task, setting), group in finished.groupby(["task", "setting"]):
            if group[param].nunique() < 2:
                continue
            chosen = group.loc[group.groupby(param)["final_val_acc"].idxmax()].sort_values(param)
            fig.add_trace(go.Scatter(
                x=chosen[param], y=chosen["final_test_acc"], mode="lines+markers",
                name=f"{task} · {setting_label(setting)}", legendgroup=f"{task} · {setting}", showlegend=col == 2,
                line={"color": colors[setting], "dash": _TASK_DASHES[tasks.index(task) % len(_TASK_DASHES)]},
                hovertext=hover_texts(chosen), hoverinfo="text",
            ), row=1, col=col)
    rhos = sorted(finished["rho0"].unique())
    fig.update_xaxes(title_text="α", row=1, col=1)
    fig.update_xaxes(title_text="ρ(0)", type="log", tickvals=rhos, ticktext=[rate_label(r) for r in rhos],
                     row=1, col=2)
    fig.update_yaxes(title_text="final test accuracy", tickformat=".0%", col=1)
    fig.update_yaxes(tickformat=".0%", col=2)
    fig.update_layout(title="Final test accuracy against α and ρ(0)", height=460)
    return fig


def rotation_vs_accuracy(results: Results, min_train_acc: float = MIN_TRAIN_ACC,
                         correlation: pd.DataFrame | None = None) -> go.Figure:
    """Final rotation summaries against test accuracy, one row of panels per task.

    Filled markers: trials that fit their training data (used in the correlation, given in
    each panel's title for all optimizer families pooled); open markers: completed trials
    below ``min_train_acc``. Colours are settings.
    """
    done = results.trials[results.trials["status"] == "completed"]
    if done.empty:
        return _empty("No completed trials yet.", "Final rotation against test accuracy")
    if correlation is None:
        correlation = correlations(results.trials, min_train_acc)
    used = fitted(done, min_train_acc).index
    colors = setting_colors(done["setting"])
    tasks = sorted(done["task"].unique())
    titles = []
    for task in tasks:
        for summary, label in ROTATION_SUMMARIES.items():
            row = correlation[(correlation["task"] == task) & (correlation["family"] == "all")
                              & (correlation["summary"] == summary)].iloc[0]
            titles.append(f"{task} · {label}<br>{correlation_text(row)}")
    fig = make_subplots(rows=len(tasks), cols=len(ROTATION_SUMMARIES), subplot_titles=titles,
                        vertical_spacing=0.4 / len(tasks), horizontal_spacing=0.06)
    traces = []
    for r, task in enumerate(tasks, start=1):
        of_task = done[done["task"] == task]
        for (setting, fits), group in of_task.groupby(["setting", of_task.index.isin(used)]):
            hover = hover_texts(group)
            for c, summary in enumerate(ROTATION_SUMMARIES, start=1):
                traces.append({
                    "type": "scatter", **_axis_refs(fig, r, c), "x": group[summary].to_numpy(),
                    "y": group["final_test_acc"].to_numpy(), "mode": "markers", "name": setting_label(setting),
                    "legendgroup": setting, "showlegend": False,
                    "marker": {"color": colors[setting], "size": 7, "opacity": 0.85,
                               "symbol": "circle" if fits else "circle-open"},
                    "hovertext": hover, "hoverinfo": "text",
                })
    legend = [(s, colors[s], "circle") for s in colors]
    legend.append((f"open: train acc < {min_train_acc:g}<br>(not in correlation)", "#777", "circle-open"))
    for name, color, symbol in legend:  # legend-only entries, in the paper's order
        traces.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": name,
                       "legendgroup": name, "marker": {"color": color, "size": 8, "symbol": symbol},
                       "hoverinfo": "skip"})
    fig.add_traces(traces)
    fig.update_xaxes(range=[-0.03, 1.03])
    for c, label in enumerate(ROTATION_SUMMARIES.values(), start=1):
        fig.update_xaxes(title_text=f"final rotation, {label}", row=len(tasks), col=c)
    fig.update_yaxes(title_text="test accuracy", tickformat=".0%", col=1)
    fig.update_yaxes(tickformat=".0%")
    fig.update_annotations(font_size=12)
    fig.update_layout(title=f"Final layer rotation against test accuracy (correlations over trials with "
                            f"final train accuracy ≥ {min_train_acc:g}, all optimizers)",
                      height=120 + 330 * len(tasks), margin={"t": 120})
    return fig


def correlation_text(row: pd.Series) -> str:
    """'ρ=0.95 [0.92, 0.97] · τ=0.81 · n=203' for one row of :func:`analysis.stats.correlations`."""
    if not np.isfinite(row["spearman"]):
        return f"too few or constant trials (n={row['n']})"
    return (f"Spearman ρ={row['spearman']:.2f} [{row['spearman_low']:.2f}, {row['spearman_high']:.2f}]"
            f" · Kendall τ={row['kendall']:.2f} · n={row['n']}")


def parallel_coordinates(results: Results) -> go.Figure:
    """Hyper-parameters, final rotation and test accuracy of every completed trial."""
    done = results.trials[results.trials["status"] == "completed"]
    if done.empty:
        return _empty("No completed trials yet.", "Parallel coordinates")
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
              "colorbar": {"title": {"text": "test acc"}, "tickformat": ".0%"}},
        dimensions=dims,
    ))
    fig.update_layout(title="Hyper-parameters, rotation and accuracy of every completed trial "
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
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", dtick=1, row=1, col=2)
    fig.update_layout(
        title=buttons[0]["args"][1]["title.text"], height=480, margin={"t": 140},
        updatemenus=[{"buttons": buttons, "x": 0, "xanchor": "left", "y": 1.22, "yanchor": "top",
                      "showactive": True}],
    )
    return fig
