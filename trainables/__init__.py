"""Trainables: the paper's tasks (data, models, protocol) as training functions.

``trainables.train.train(config: dict) -> list[dict]`` trains one run config (``layrot.run``
defines its keys, units and allowed values) and returns one record per epoch, with the keys
``layrot.run.EPOCH_KEYS``: the scalar ``EPOCH_METRICS``, ``layer_names`` (the kernel layers in
forward order) and one list per ``LAYER_METRICS`` entry, aligned with ``layer_names``.

Outside Ray Tune it prints one line per epoch and returns the records;
``trainables.train.Run`` steps a run an epoch at a time and checkpoints it (``state_dict``). As
a Tune trial (``trainables.tune_trial.run_trial``) it reports each record with a checkpoint and
resumes from ``ray.tune.get_checkpoint()``. Ray is imported only there.
"""
