"""The HTML report: one self-contained file (plotly.js inlined once) that opens offline.

It leads with the answer per task (does final rotation predict test accuracy, and which
configuration wins), then the tables and the interactive figures to dig in.
"""
from __future__ import annotations

import html
import os
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis import figures
from analysis.load import Results
from layrot.run import MIN_TRAIN_ACC
from analysis.stats import ROTATION_SUMMARIES, best_configs, correlations, status_counts
from layrot import __version__

_MENU_PER_TASK = 40   # trials per task in the training-curve menu (each carries its curves)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #fafafa; }
main { max-width: 1500px; margin: 0 auto; padding: 16px 28px 60px; }
h1 { font-size: 1.6em; margin: 8px 0 2px; } h2 { margin-top: 34px; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
.answers { display: grid; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); gap: 14px;
           margin-top: 14px; }
.answer { background: white; border-radius: 8px; padding: 12px 16px; border-left: 6px solid #999;
          box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.answer.yes { border-left-color: #2ca02c; } .answer.no { border-left-color: #d62728; }
.answer h3 { margin: 0 0 6px; } .verdict { font-size: 1.15em; font-weight: 600; margin: 4px 0; }
.answer p { margin: 5px 0; }
table { border-collapse: collapse; font-size: 0.88em; background: white; margin: 8px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e5e5e5; text-align: right; }
th { background: #f0f0f0; } td:nth-child(-n+3), th:nth-child(-n+3) { text-align: left; }
td { white-space: nowrap; }
table.mini { width: 100%; margin-top: 8px; } table.mini td:nth-child(3), table.mini th:nth-child(3) { text-align: right; }
tr.winner td { font-weight: 600; }
.figure { background: white; border-radius: 8px; margin: 12px 0; padding: 6px;
          box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.note { color: #555; font-size: 0.92em; max-width: 1100px; }
"""


def write_report(results: Results, path: str, min_train_acc: float = MIN_TRAIN_ACC, n_boot: int = 1000) -> int:
    """Write the report to `path` atomically (never a half-written file); returns its size in bytes."""
    text = render_report(results, min_train_acc, n_boot)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(text.encode())


def render_report(results: Results, min_train_acc: float = MIN_TRAIN_ACC, n_boot: int = 1000) -> str:
    """The report as one HTML string."""
    trials = results.trials
    corr = correlations(trials, min_train_acc, n_boot=n_boot)
    best = best_configs(trials)
    figs = [
        ("Does final rotation predict test accuracy?", figures.rotation_vs_accuracy(results, min_train_acc, corr),
         "Each point is a completed trial. Filled points fit their training data and enter the correlation; "
         "open points did not. Hover a point for its full configuration."),
        ("Layer rotation curves", figures.rotation_curves(results),
         "The best configuration of each setting, one line per kernel layer (purple: first layer, yellow: "
         "last). The paper's rule of thumb: the best runs turn nearly every layer to a cosine distance of 1."),
        ("Test accuracy over α × ρ(0)", figures.accuracy_heatmaps(results), ""),
        ("Test accuracy against α and ρ(0)", figures.accuracy_profiles(results), ""),
        ("All trials", figures.parallel_coordinates(results), ""),
        ("Training curves per trial", figures.training_curves(results, per_task=_MENU_PER_TASK),
         "Pick a trial in the menu: per task, each setting's best run and the other best runs by validation "
         f"accuracy ({_MENU_PER_TASK} per task)."),
    ]
    sweeps = ", ".join(results.sweeps)
    running = int((trials["status"] == "running").sum())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>layrot report: {html.escape(sweeps)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body><main>",
        f"<h1>Layer rotation and generalization: {html.escape(sweeps)}</h1>",
        f'<div class="meta">{len(trials)} trials from {html.escape(results.store)} · generated '
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by layrot {__version__}"
        + (f" · <b>{running} trial(s) still running</b>: statistics use completed trials only" if running else "")
        + "</div>",
        _answers(trials, corr, best, min_train_acc),
    ]
    for i, (title, fig, note) in enumerate(figs):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append(f'<div class="figure">{_figure_html(fig, f"figure-{i + 1}")}</div>')
        if i == 0:
            parts += ["<h2>Best configuration per task and setting</h2>",
                      '<p class="note">Chosen by final validation accuracy (the paper\'s rule); Δ is the test '
                      "accuracy difference, in points, to the task's best Layca run.</p>",
                      _best_table(best)]
    parts += [
        "<h2>Correlations</h2>",
        f'<p class="note">Over completed trials with final training accuracy ≥ {min_train_acc:g}; the '
        f"intervals are {n_boot}-resample percentile bootstrap 95% intervals, p-values from scipy. Family "
        "“all” pools the optimizers of a task; a family groups an optimizer with its Layca and L2 variants.</p>",
        _correlation_table(corr),
        "<h2>Trials</h2>",
        _table(status_counts(trials).reset_index()),
        _skipped(results.skipped),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _figure_html(fig, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _answers(trials: pd.DataFrame, corr: pd.DataFrame, best: pd.DataFrame, min_train_acc: float) -> str:
    """One card per task: the verdict in a sentence, its evidence, and each setting's best run."""
    cards = []
    for task in sorted(trials["task"].unique()):
        row = corr[(corr["task"] == task) & (corr["family"] == "all") & (corr["summary"] == "rotation_mean")].iloc[0]
        kind, verdict = _verdict(row)
        left_out = (f"left out: {row['n_unfit']} unfit, {row['n_diverged']} diverged, "
                    f"{row['n_unfinished']} unfinished")
        if np.isfinite(row["spearman"]):
            evidence = (f"Spearman ρ = {row['spearman']:.2f} [{row['spearman_low']:.2f}, "
                        f"{row['spearman_high']:.2f}], p = {row['spearman_p']:.1g}, between mean final rotation "
                        f"and test accuracy over {row['n']} runs with train accuracy ≥ {min_train_acc:g} ({left_out}).")
        else:
            evidence = (f"{row['n']} run(s) reach train accuracy ≥ {min_train_acc:g} ({left_out}); "
                        "a lower --min-train-acc admits more.")
        cards.append(f'<div class="answer {kind}"><h3>{html.escape(task)}</h3><div class="verdict">{verdict}</div>'
                     f"<p>{evidence}</p>{_settings_table(best[best['task'] == task])}</div>")
    return '<div class="answers">' + "".join(cards) + "</div>"


def _settings_table(best: pd.DataFrame) -> str:
    """Each setting's best run, best validation accuracy first; the winner is starred."""
    if best.empty:
        return "<p>No completed configuration yet.</p>"
    best = best.sort_values("final_val_acc", ascending=False)
    rows = []
    for i, (_, t) in enumerate(best.iterrows()):
        star, css = ("★ ", ' class="winner"') if i == 0 else ("", "")
        rows.append(f"<tr{css}><td>{star}{html.escape(t['setting'])}</td>"
                    f"<td>{html.escape(figures.hyperparameter_label(t))}</td>"
                    f"<td>{figures.percent(t['final_test_acc'])}</td><td>{_points(t['delta_vs_layca'])}</td></tr>")
    return ('<table class="mini"><tr><th>setting</th><th>configuration</th><th>test acc</th>'
            f"<th>Δ vs best Layca</th></tr>{''.join(rows)}</table>")


def _points(delta: float) -> str:
    return "" if not np.isfinite(delta) else f"{100 * delta:+.1f}"


def _verdict(row: pd.Series) -> tuple[str, str]:
    """(css class, sentence) from a correlation row's Spearman interval."""
    if not np.isfinite(row["spearman"]):
        return "unclear", "Too few runs fit their training data to tell."
    if row["spearman_low"] > 0:
        strength = "strongly" if row["spearman"] >= 0.7 else "moderately" if row["spearman"] >= 0.4 else "weakly"
        return "yes", f"Yes: larger final layer rotation {strength} predicts higher test accuracy."
    if row["spearman_high"] < 0:
        return "no", "No: here larger rotation goes with lower test accuracy."
    return "unclear", "Unclear: no rank correlation distinguishable from zero."


def _best_table(best: pd.DataFrame) -> str:
    if best.empty:
        return '<p class="note">No completed trials yet.</p>'
    rows = pd.DataFrame({
        "task": best["task"],
        "setting": best["setting"],
        "configuration": [figures.hyperparameter_label(t) for _, t in best.iterrows()],
        "val acc": best["final_val_acc"].map(figures.percent),
        "test acc": best["final_test_acc"].map(figures.percent),
        "Δ vs best Layca": best["delta_vs_layca"].map(_points),
        **{f"rotation {label}": best[col].map(lambda v: f"{v:.2f}") for col, label in ROTATION_SUMMARIES.items()},
        "trials": best["n_trials"],
    })
    return _table(rows)


def _correlation_table(corr: pd.DataFrame) -> str:
    def stat(row, name):
        if not np.isfinite(row[name]):
            return "n/a"
        return f"{row[name]:.2f} [{row[f'{name}_low']:.2f}, {row[f'{name}_high']:.2f}] p={row[f'{name}_p']:.1g}"

    rows = pd.DataFrame({
        "task": corr["task"],
        "family": corr["family"],
        "rotation summary": corr["summary"].map(ROTATION_SUMMARIES),
        "n": corr["n"],
        "Spearman ρ [95% CI]": [stat(r, "spearman") for _, r in corr.iterrows()],
        "Kendall τ [95% CI]": [stat(r, "kendall") for _, r in corr.iterrows()],
        "excluded: unfit / diverged / unfinished": [f"{r['n_unfit']} / {r['n_diverged']} / {r['n_unfinished']}"
                                                    for _, r in corr.iterrows()],
    })
    return _table(rows)


def _skipped(skipped: list[str]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    return f'<p class="note">{len(skipped)} unreadable store file(s) were skipped:</p><ul>{items}</ul>'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0)
