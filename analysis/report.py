"""The HTML report: one self-contained file (plotly.js inlined once) that opens offline.

It leads with the answer per task (does final rotation rank configurations as test accuracy
does, and which configuration wins), then whether rotation predicts better than the obvious
alternatives, a diagnosis per setting, the figures and a sortable table of every configuration.
Every number is over configurations (seed means), never over runs as if seeds were independent.
"""
from __future__ import annotations

import html
import os
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis import figures, rank
from analysis.configurations import SELECTION, best_per_setting, configurations, paired_difference, winners
from analysis.diagnosis import diagnose
from analysis.load import Results
from analysis.preregistration import Threshold, threshold
from analysis.stats import status_counts
from layrot import __version__
from layrot.run import FINISHED, rate_label

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
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 8px 12px; border-radius: 6px; margin: 10px 0; }
table.sortable th { cursor: pointer; } table.sortable th:hover { background: #e2e2e2; }
.diagnosis li { margin: 4px 0; max-width: 1200px; }
"""

# Click a column head to sort by it (again: the other way); cells sort by data-value if given.
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
    const body = table.tBodies[0], rows = Array.from(body.rows), up = th.dataset.order !== 'asc';
    table.querySelectorAll('th').forEach(h => delete h.dataset.order);
    th.dataset.order = up ? 'asc' : 'desc';
    const key = r => { const c = r.cells[i], v = c.dataset.value ?? c.textContent, n = Number(v);
                       return v !== '' && !Number.isNaN(n) ? n : v; };
    rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
    rows.forEach(r => body.appendChild(r));
  }));
});
"""
# No modebar button may send a figure (and every trial's config in it) anywhere: the bundled
# plotly.js shows its "Share chart..." button (sendDataToCloud) unless told not to, and the
# server it would upload to is blanked as well. (This plotly.js has no Chart Studio or link
# options; plotly.py warns about unknown ones.)
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False, "plotlyServerURL": "",
                 "modeBarButtonsToRemove": ["sendDataToCloud"]}



def write_report(results: Results, path: str, min_train_acc: float | None = None, n_boot: int = 1000) -> int:
    """Write the report to `path` atomically (never a half-written file); returns its size in bytes.
    ``min_train_acc`` None is the study's pre-registered threshold."""
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


def render_report(results: Results, min_train_acc: float | None = None, n_boot: int = 1000) -> str:
    """The report as one HTML string."""
    trials = results.trials
    rule = threshold(results.store, results.sweeps, min_train_acc)
    configs = configurations(trials, rule.value)
    corr = rank.correlations(configs, n_boot)
    figs = [
        ("Does final rotation rank configurations as test accuracy does?",
         figures.rotation_vs_accuracy(configs, rule.value, corr),
         "Each point is a configuration (its seeds averaged; error bars: their standard deviation). Filled "
         "points fit their training data and enter the correlation; open points did not."),
        ("Layer rotation curves", figures.rotation_curves(results, configs),
         "The best configuration of each setting, one line per kernel layer (purple: first layer, yellow: "
         "last), averaged over its seeds. The paper's rule of thumb: the best runs turn nearly every layer to a "
         "cosine distance of 1."),
        ("Test accuracy over α × ρ(0)", figures.accuracy_heatmaps(configs), ""),
        ("Test accuracy against α and ρ(0)", figures.accuracy_profiles(configs), ""),
        ("All finished trials", figures.parallel_coordinates(results), ""),
        ("Training curves per trial", figures.training_curves(results, per_task=_MENU_PER_TASK),
         "Pick a trial in the menu: per task, each setting's best run and the other best runs by validation "
         f"accuracy ({_MENU_PER_TASK} per task). Per-epoch accuracies may count a subset of the held-out and "
         "test splits (the task's); the final epoch counts the whole splits where the store records it."),
    ]
    sweeps = ", ".join(results.sweeps)
    unfinished = trials[~trials["status"].isin(FINISHED)]
    banner = rule.banner()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>layrot report: {html.escape(sweeps)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body><main>",
        f"<h1>Layer rotation and generalization: {html.escape(sweeps)}</h1>",
        (f'<div class="warning" id="threshold-warning">{html.escape(banner)}</div>' if banner else ""),
        f'<div class="meta">{len(trials)} trials, {len(configs)} configurations from {html.escape(results.store)} · '
        f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by layrot {__version__}"
        + (f" · <b>{len(unfinished)} trial(s) not finished</b> ({html.escape(_counts(unfinished))}): left out of "
           "every statistic" if len(unfinished) else "") + "</div>",
        f'<p class="note">{html.escape(_threshold_note(rule))} {html.escape(_images_note(trials))}</p>',
        "<h2>Answer per task</h2>",
        _answers(trials, configs, corr, rule),
        "<h2>Is rotation a better predictor than the obvious alternatives?</h2>",
        '<p class="note">The same fitting configurations ranked by each measure against their test accuracy: '
        "Kendall's τ over all of them, and Jiang et al.'s granulated Kendall Ψ (2019: the mean over the axes α, "
        "ρ(0) and setting of Kendall's τ among configurations that differ only in that axis, so that no single "
        f"hyper-parameter drives it). Intervals: {n_boot}-resample percentile bootstrap, 95% (τ over "
        "configurations, Ψ over each axis's groups); fixed seed and sorted rows, so a rerun gives the same.</p>",
        _predictor_table(rank.predictors(configs, n_boot)),
        "<h2>Diagnosis per setting</h2>",
        _diagnoses(results, configs, rule.value),
    ]
    for i, (title, fig, note) in enumerate(figs):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append(f'<div class="figure">{_figure_html(fig, f"figure-{i + 1}")}</div>')
    parts += [
        "<h2>All configurations</h2>",
        '<p class="note">One row per configuration (what <code>layrot summary</code> prints); click a column '
        "to sort. Accuracies in percent: seed mean, ± the seed standard deviation, and the Student-t 95% interval "
        "of the mean. ★ marks each setting's best by seed-mean validation accuracy; “edge” marks a best whose "
        "ρ(0) is the smallest or largest its setting tried.</p>",
        _configuration_table(configs),
        "<h2>Correlations per optimizer family</h2>",
        f'<p class="note">Over configurations with seed-mean final training accuracy ≥ {rule.value:g}; a family '
        "groups an optimizer with its Layca and L2 variants; “all” pools them.</p>",
        _correlation_table(corr),
        "<h2>Correlations within each ρ(0)</h2>",
        '<p class="note">A pooled correlation can come from the rate alone (larger rates rotate more and, up to '
        "a point, test better: Simpson's paradox); among configurations of one ρ(0) it cannot.</p>",
        _within_rho_table(rank.within_rho(configs, n_boot)),
        "<h2>Trials</h2>",
        _table(status_counts(trials).reset_index()),
        _skipped(results.skipped),
        f"<script>{_SORT_JS}</script>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _counts(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _threshold_note(rule: Threshold) -> str:
    return (f"A configuration fits its training data when its seed-mean final training accuracy is at least "
            f"{rule.value:g} (pre-registered: {rule.registered:g}, {rule.source}); only such configurations "
            "enter the correlations.")


def _images_note(trials: pd.DataFrame) -> str:
    """How many images the final accuracies count, and what that means for one run's precision."""
    images = trials["final_test_images"].dropna()
    if images.empty:
        return ("The number of images the final accuracies count is not recorded in this store (it was written "
                "before the store recorded it).")
    n = int(images.min())
    return (f"Final test accuracies count {n:,} test images or more; at 85% accuracy one run's binomial standard "
            f"error is {100 * (0.85 * 0.15 / n) ** 0.5:.2f} points.")


def _figure_html(fig, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOTLY_CONFIG)


def _answers(trials: pd.DataFrame, configs: pd.DataFrame, corr: pd.DataFrame, rule: Threshold) -> str:
    """One card per task: the verdict in a sentence, its evidence, and each setting's best configuration."""
    cards = []
    for task in sorted(configs["task"].unique()):
        row = corr[(corr["task"] == task) & (corr["family"] == rank.ALL_FAMILIES)
                   & (corr["measure"] == "rotation_mean_mean")].iloc[0]
        kind, verdict = _verdict(row)
        of_task = configs[configs["task"] == task]
        evidence = (f"Kendall τ = {rank.interval_text(row, 'kendall')} (Spearman r_s = "
                    + (f"{row['spearman']:.2f}" if np.isfinite(row["spearman"]) else "n/a")
                    + f") between mean final rotation and test accuracy over the {row['n']} of {len(of_task)} "
                    f"configurations whose seed-mean training accuracy reaches {rule.value:g}.")
        cards.append(f'<div class="answer {kind}"><h3>{html.escape(task)}</h3><div class="verdict">{verdict}</div>'
                     f"<p>{html.escape(evidence)}</p>{_settings_table(trials, of_task)}</div>")
    if not cards:
        return '<p class="note">No finished trial yet: nothing to answer.</p>'
    return '<div class="answers">' + "".join(cards) + "</div>"


def _settings_table(trials: pd.DataFrame, configs: pd.DataFrame) -> str:
    """Each setting's best configuration (the best_in_setting rows), best validation accuracy
    first; the star is the highest; the last column is the paired test difference to the best
    Layca-SGD over their shared seeds."""
    best = best_per_setting(configs)
    if best.empty:
        return "<p>No finished configuration yet.</p>"
    star = winners(configs).iloc[0]
    ties = best[np.isclose(best[SELECTION], star[SELECTION], rtol=0, atol=1e-12)]
    reference = best[best["setting"] == figures.REFERENCE_SETTING]
    rows = []
    for _, c in best.iterrows():
        is_star = c["setting"] == star["setting"]
        if reference.empty:
            versus = "no Layca-SGD in this task"
        elif c["setting"] == figures.REFERENCE_SETTING:
            versus = "reference"
        else:
            versus = _delta_text(paired_difference(trials, c, reference.iloc[0]))
        rows.append(f'<tr{" class=winner" if is_star else ""} data-task="{html.escape(c["task"])}" data-setting="{html.escape(c["setting"])}" '
                    f'data-alpha="{c["alpha"]!r}" data-rho0="{c["rho0"]!r}"><td>{"★ " if is_star else ""}'
                    f'{html.escape(c["setting"])}</td><td>{html.escape(figures.hyperparameter_label(c))}</td>'
                    f"<td>{figures.percent(c['val_acc_mean'])}</td><td>{_spread(c, 'test_acc')}</td>"
                    f"<td>{versus}</td></tr>")
    tie = ("" if len(ties) < 2 else '<p class="note">Tie on validation accuracy: '
           + ", ".join(html.escape(s) for s in ties["setting"]) + f"; the star goes to {html.escape(star['setting'])} "
           "(the first in the configuration table's order).</p>")
    return ('<table class="mini"><tr><th>setting</th><th>configuration</th><th>val acc</th><th>test acc ± std</th>'
            f"<th>vs best Layca-SGD (test, paired)</th></tr>{''.join(rows)}</table>{tie}")


def _spread(row: pd.Series, name: str) -> str:
    std = row[f"{name}_std"]
    return figures.percent(row[f"{name}_mean"]) + ("" if not np.isfinite(std) else f" ± {100 * std:.1f}")


def _delta_text(d: dict) -> str:
    if not d["paired"]:
        return f"{100 * d['delta']:+.1f} (no shared seed: unpaired)"
    interval = ("" if not np.isfinite(d["low"]) else f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")
    return f"{100 * d['delta']:+.1f}{interval} ({d['pairs']} seed(s))"


def _verdict(row: pd.Series) -> tuple[str, str]:
    """(css class, sentence) from a correlation row's Kendall interval."""
    if not np.isfinite(row["kendall"]):
        return "unclear", "Too few configurations fit their training data to tell."
    if row["kendall_low"] > 0:
        strength = "strongly" if row["kendall"] >= 0.6 else "moderately" if row["kendall"] >= 0.3 else "weakly"
        return "yes", f"Yes: larger final layer rotation {strength} predicts higher test accuracy."
    if row["kendall_high"] < 0:
        return "no", "No: here larger rotation goes with lower test accuracy."
    return "unclear", "Unclear: the rank correlation's interval includes zero."


def _predictor_table(table: pd.DataFrame) -> str:
    if table.empty:
        return '<p class="note">No finished configuration yet.</p>'
    rows = pd.DataFrame({
        "task": table["task"],
        "measure": table["measure"].map(rank.MEASURES),
        "configurations": table["n"],
        "Kendall τ [95% CI]": [rank.interval_text(r, "kendall") for r in table.to_dict("records")],
        "Ψ [95% CI]": [rank.interval_text(r, "psi") for r in table.to_dict("records")],
        "Ψ per axis (τ, groups)": [", ".join(f"{a} {v:.2f} ({g})" for a, (v, g) in r["per_axis"].items()) or "none"
                                   for r in table.to_dict("records")],
    })
    return _table(rows)


def _diagnoses(results: Results, configs: pd.DataFrame, min_train_acc: float) -> str:
    found = diagnose(results, configs, min_train_acc)
    if not found:
        return '<p class="note">No finished configuration yet.</p>'
    items = "".join(f"<li><b>{html.escape(d.task)} · {html.escape(figures.setting_label(d.setting))}</b>: "
                    f"{html.escape(' '.join(d.sentences))}</li>" for d in found)
    return f'<ul class="diagnosis">{items}</ul>'


def _configuration_table(configs: pd.DataFrame) -> str:
    if configs.empty:
        return '<p class="note">No finished configuration yet.</p>'

    def cell(text: str, value=None) -> str:
        sort = "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f' data-value="{value!r}"'
        return f"<td{sort}>{html.escape(text)}</td>"

    def interval(c, name):
        low, high = c[f"{name}_ci_low"], c[f"{name}_ci_high"]
        return "" if not np.isfinite(low) else f"[{100 * low:.1f}, {100 * high:.1f}]"

    heads = ["task", "setting", "α", "ρ(0)", "weight decay", "seeds", "val %", "test %", "test 95% CI",
             "train %", "rotation mean", "rotation min", "best", "fits"]
    rows = []
    for c in configs.to_dict("records"):
        rows.append("<tr>" + "".join([
            cell(c["task"]), cell(c["setting"]), cell(f"{c['alpha']:g}", c["alpha"]),
            cell(rate_label(c["rho0"]), c["rho0"]), cell(f"{c['weight_decay']:g}", c["weight_decay"]),
            cell(str(c["seeds"]) + (f" ({c['diverged']} diverged)" if c["diverged"] else ""), c["seeds"]),
            cell(f"{100 * c['val_acc_mean']:.1f}", c["val_acc_mean"]),
            cell(_spread(c, "test_acc").replace("%", ""), c["test_acc_mean"]),
            cell(interval(c, "test_acc")), cell(f"{100 * c['train_acc_mean']:.1f}", c["train_acc_mean"]),
            cell(f"{c['rotation_mean_mean']:.3f}", c["rotation_mean_mean"]),
            cell(f"{c['rotation_min_mean']:.3f}", c["rotation_min_mean"]),
            cell(("★" if c["best_in_setting"] else "") + (" edge" if c["rho0_at_grid_edge"] else "")),
            cell("yes" if c["fits"] else "no"),
        ]) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return (f'<table class="sortable" id="configurations"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _correlation_table(corr: pd.DataFrame) -> str:
    if corr.empty:
        return '<p class="note">No finished configuration yet.</p>'
    records = corr.to_dict("records")
    rows = pd.DataFrame({
        "task": corr["task"],
        "family": corr["family"],
        "measure": corr["measure"].map(rank.MEASURES),
        "configurations used": corr["n"],
        "unfit": corr["n_unfit"],
        "Kendall τ [95% CI]": [rank.interval_text(r, "kendall") for r in records],
        "Spearman r_s [95% CI]": [rank.interval_text(r, "spearman") for r in records],
    })
    return _table(rows)


def _within_rho_table(table: pd.DataFrame) -> str:
    if table.empty:
        return '<p class="note">No configuration fits its training data: nothing to correlate.</p>'
    records = table.to_dict("records")
    rows = pd.DataFrame({
        "task": table["task"],
        "ρ(0)": table["rho0"].map(rate_label),
        "measure": table["measure"].map(rank.MEASURES),
        "configurations": table["n"],
        "Kendall τ [95% CI]": [rank.interval_text(r, "kendall") for r in records],
        "Spearman r_s [95% CI]": [rank.interval_text(r, "spearman") for r in records],
    })
    return _table(rows)


def _skipped(skipped: list[str]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    return f'<p class="note">{len(skipped)} unreadable store file(s) were skipped:</p><ul>{items}</ul>'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0)
