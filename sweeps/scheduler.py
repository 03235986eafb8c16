"""The spec's ``scheduler`` as a Ray Tune scheduler, and the rotation-aware one Tune lacks.

:class:`RotationScheduler` stops trials at rungs ``grace * eta^k`` epochs like ASHA, but ranks
the trials at a rung by ``sweeps.pruning.ROTATION_SCORE``: the cosine distance of the
least-turned layer plus the validation accuracy. Layer rotation predicts generalization and
moves early (a layer far from a distance of 1 after a few epochs rarely gets there), while
early validation accuracy on a high initial rate is noisy: ranking by accuracy alone stopped
the study's best trial at its first rung (docs/pruning.md has the replay of every candidate).

It works in any Tune run whose trials report a per-layer rotation list and a validation
accuracy (the key names are arguments). Tune does not save a scheduler's state with its
experiment; this one writes its rungs to a file after every decision and reads them back
when a restored experiment first consults it, so a resumed sweep keeps the decisions
made before the interruption and makes the later ones against the same rungs. (If the kill
came before Tune saved that a stopped trial had ended, Tune runs it again from its last saved
checkpoint; it is stopped again at the same rung.)
"""
from __future__ import annotations

import json
import uuid
from collections import deque

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from sweeps.pruning import METRIC, ROTATION, ROTATION_SCORE, TIME, RungRule
from sweeps.spec import SweepSpec
from sweeps.store import open_store

# STORE/_scheduler/<sweep>.json. Not in Tune's experiment folder: a restored experiment uploads
# its own copy of that folder again and again, which would put back the rungs of before the kill.
STATE_DIR = "_scheduler"


class RotationScheduler(FIFOScheduler):
    """Rotation-aware asynchronous successive halving (see the module docstring).

    ``grace``: epochs before any stop (the first rung); ``eta``: rung spacing, and each rung
    keeps the best 1/eta; ``max_t``: the planned epochs; ``score``: a ``sweeps.pruning.SCORES``
    name; ``time_attr``, ``metric``, ``rotation_attr``: the result keys of the clock, the
    validation accuracy (higher is better) and the per-layer cosine distances; ``state_dir``
    (a folder: path or URI) and ``state_file`` (a path below it): where the rungs are kept, or
    ``state_dir`` None to keep them in memory only.
    """

    def __init__(self, grace: int = 1, eta: float = 3, max_t: int = 100, score: str = ROTATION_SCORE,
                 time_attr: str = "training_iteration", metric: str = METRIC, rotation_attr: str = ROTATION,
                 state_dir: str | None = None, state_file: str = "rotation_scheduler.json"):
        super().__init__()
        self._rule = RungRule(score, grace, eta, max_t)
        self._keys = {TIME: time_attr, METRIC: metric, ROTATION: rotation_attr}
        self._state_dir, self._state_file = state_dir, state_file
        self._loaded = True        # a new sweep starts with empty rungs (over any stale file)
        self._recent: dict[str, deque] = {}           # trial -> its last two records (for the score)

    def __getstate__(self) -> dict:
        """Tune pickles the scheduler when a sweep starts and unpickles it to resume one: the
        copy reads the rungs back before its first decision."""
        return {**self.__dict__, "_loaded": self._state_dir is None}

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if any(key not in result for key in self._keys.values()):
            return TrialScheduler.CONTINUE
        self._load()
        record = {ours: result[theirs] for ours, theirs in self._keys.items()}
        history = self._recent.setdefault(trial.trial_id, deque(maxlen=2))
        history.append(record)
        before = json.dumps(self._rule.state())
        stop = self._rule.decide(trial.trial_id, list(history))
        if json.dumps(self._rule.state()) != before:
            self._save()
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._recent.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._recent.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        rungs = ", ".join(f"epoch {m:g}: {len(r)}" for m, r in sorted(self._rule.rungs.items()))
        return f"RotationScheduler ({self._rule.score}): {len(self._rule.stopped)} stopped; at rungs {rungs}"

    @property
    def stopped(self) -> dict[str, float]:
        """trial_id -> the rung (epoch) that stopped it."""
        return dict(self._rule.stopped)

    def _path(self) -> tuple:
        fs, root = open_store(self._state_dir)
        return fs, f"{root.rstrip('/')}/{self._state_file}"

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        fs, path = self._path()
        try:
            with fs.open_input_stream(path) as f:
                saved = json.loads(f.read().decode())
        except FileNotFoundError:
            return
        self._rule = RungRule.from_state(saved)

    def _save(self) -> None:
        if self._state_dir is None:
            return
        fs, path = self._path()
        folder, name = path.rsplit("/", 1)
        fs.create_dir(folder, recursive=True)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(json.dumps(self._rule.state()).encode())
        fs.move(tmp, path)


def state_file(sweep: str) -> str:
    """Where, below the store, the rotation scheduler of a sweep keeps its rungs."""
    return f"{STATE_DIR}/{sweep}.json"


def tune_scheduler(spec: SweepSpec, store: str) -> TrialScheduler | None:
    """The Tune scheduler of a spec's ``scheduler`` setting (None: Tune's default, no stops).
    ASHA and median stopping are Tune's own, on validation accuracy per epoch (Tune keeps
    no scheduler state, so after a resume they start their rungs afresh); the rotation
    scheduler keeps its rungs in the store (``state_file``)."""
    pruning, max_t = spec.pruning, spec.max_epochs
    if pruning.type == "asha":
        return ASHAScheduler(time_attr=TIME, metric=METRIC, mode="max", max_t=max_t,
                             grace_period=pruning.grace, reduction_factor=pruning.eta)
    if pruning.type == "median":
        return MedianStoppingRule(time_attr=TIME, metric=METRIC, mode="max", grace_period=pruning.grace)
    if pruning.type == "rotation":
        return RotationScheduler(pruning.grace, pruning.eta, max_t, time_attr=TIME, state_dir=store,
                                 state_file=state_file(spec.name))
    return None
