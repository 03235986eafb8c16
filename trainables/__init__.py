"""Trainables: the paper's tasks (data, models, protocol) as training functions.

The contract the rest of the project relies on:

``trainables.train.train(config: dict) -> list[dict]`` trains one configuration. ``config``
is a plain dict (see ``trainables.config.TrainConfig`` for keys, defaults and units). Every
epoch it produces one metrics dict with always the same keys::

    epoch          int    finished epochs, 1..N
    lr             float  base rate rho(e) in force during the epoch
    train_loss     float  mean training loss over the epoch (nan once diverged)
    train_acc      float  fractions in [0, 1]
    val_acc        float
    test_acc       float
    epoch_seconds  float  wall time of the epoch, training + evaluation
    diverged       bool   True on the report where a non-finite loss stopped training
    rotation       list[float]  cosine distance from init per kernel layer, forward order
    layer_names    list[str]    the kernel layers' parameter names, same order

Outside Ray Tune it prints one line per epoch and returns the list of these dicts;
``trainables.train.Run`` steps a run an epoch at a time and checkpoints it (``state_dict``). As
a Tune trial (``trainables.tune_trial.run_trial``) it reports each dict with a checkpoint and
resumes from ``ray.tune.get_checkpoint()``. Ray is imported only there.
"""

# The per-epoch report's keys, in order (importable without torch, e.g. by a sweep driver).
METRIC_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_acc", "test_acc", "epoch_seconds",
               "diverged", "rotation", "layer_names")
