"""The analysis settings a study announced before its runs (its sweep specs' ``analysis:``),
read back from the store's sweep files, so a report judges a study by the rule it set itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from analysis.load import Results
from layrot.run import ENDED, analysis_settings
from sweeps.store import read_sweep_files


@dataclass(frozen=True)
class Threshold:
    """The training-accuracy threshold in use and the one the study registered."""

    value: float
    registered: float
    source: str               # where ``registered`` comes from, in words

    @property
    def overridden(self) -> bool:
        return self.value != self.registered

    def banner(self) -> str | None:
        """The warning a report or document must lead with when it departs from the registration."""
        if not self.overridden:
            return None
        return (f"This analysis uses a training-accuracy threshold of {self.value:g}, not the {self.registered:g} "
                f"pre-registered ({self.source}): its verdicts were not fixed before the runs.")


def threshold(store: str, sweeps: list[str], given: float | None = None) -> Threshold:
    """The registered threshold of the loaded sweeps (a sweep without a sweep file, as in stores
    written before them, has the default), and ``given`` if one was asked for. Sweeps that
    registered different thresholds cannot be judged by one: a ValueError says so."""
    files = read_sweep_files(store)
    registered = {s: analysis_settings((files.get(s) or {}).get("analysis"))["min_train_acc"] for s in sweeps}
    values = sorted(set(registered.values()))
    if len(values) > 1:
        listing = ", ".join(f"{s}: {v:g}" for s, v in sorted(registered.items()))
        raise ValueError(f"the sweeps registered different min_train_acc ({listing}); report one with --sweep "
                         "or give --min-train-acc")
    recorded = [s for s in sweeps if (files.get(s) or {}).get("analysis", {}).get("min_train_acc") is not None]
    source = (f"in the sweep file(s) of {', '.join(recorded)}" if recorded
              else "the default: no sweep of this store registered one")
    value = values[0] if given is None else float(analysis_settings({"min_train_acc": given})["min_train_acc"])
    return Threshold(value, values[0], source)


def whole_sweeps(results: Results) -> tuple[Results, str]:
    """``results`` without the sweeps whose registered grid has points not yet ended (their
    configurations would enter with seeds missing, so a study's numbers wait for them), and
    those sweeps in words, e.g. "study-adaptive (12 of 84 trials ended)" ("" when none)."""
    files = read_sweep_files(results.store)
    ended = results.trials[results.trials["status"].isin(ENDED)].groupby("sweep").size()
    running = {}
    for sweep in results.sweeps:
        planned, done = len((files.get(sweep) or {}).get("grid") or []), int(ended.get(sweep, 0))
        if done < planned:
            running[sweep] = f"{sweep} ({done} of {planned} trials ended)"
    return results.of_sweeps(s for s in results.sweeps if s not in running), ", ".join(running.values())
