"""The training function: one config dict in, one metrics dict per epoch out.

``Run`` holds a run's whole state and advances it an epoch at a time, so the same code serves
a plain loop (``train``) and a Ray Tune trial that checkpoints between epochs
(``trainables.tune_trial``). Its ``state_dict`` holds model, optimizer (Layca's initial norms
included), schedule, the rotation monitor's snapshot and every RNG, so a run resumed from any
epoch's checkpoint ends with the same metrics as one that never stopped (on CPU).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import layrot_core as lc
from layrot.run import LAYER_NAMES, RUNTIME_KEYS, RunConfig, network_relative_distance, resolve
from trainables import data as datasets
from trainables.models import build_model, input_shape

EVAL_BATCH = 1000
# Steps between two reads of the divergence flag: reading it makes the host wait for the
# accelerator, so a diverged run is stopped up to this many steps late instead of syncing per step.
DIVERGENCE_CHECK_STEPS = 16


def pick_device(name: str) -> torch.device:
    """"auto": the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={name!r}, but {torch.cuda.device_count()} CUDA device(s) are visible; use auto or cpu")
    return device


def build_optimizer(cfg: RunConfig, model: torch.nn.Module, example: torch.Tensor) -> torch.optim.Optimizer:
    """The setting's optimizer with the authors' settings, eq. 1 multipliers (alpha) per kernel
    layer, optionally wrapped in Layca. Without Layca the multipliers scale each group's lr."""
    setting = cfg.setting_spec
    base = getattr(torch.optim, setting.base)
    kwargs = dict(setting.kwargs, weight_decay=cfg.weight_decay)
    groups = lc.param_groups(model, alpha=cfg.alpha, example_input=example)
    if setting.layca:
        return lc.Layca(groups, base=base, lr=cfg.rho0, **kwargs)
    for group in groups:
        group["lr"] = cfg.rho0 * group.get("lr_scale", 1.0)
    return base(groups, lr=cfg.rho0, **kwargs)


def applied_rate(optimizer: torch.optim.Optimizer) -> float:
    """The base rate the optimizer applies now: a group's ``lr / lr_scale`` (the groups agree),
    read from the optimizer itself so a logged rate is never a recomputation."""
    groups = [g for g in optimizer.param_groups if g.get("lr_scale", 1.0) > 0]
    group = next((g for g in groups if g.get("lr_scale", 1.0) == 1.0), groups[0])
    return float(group["lr"]) / group.get("lr_scale", 1.0)


class Run:
    """One training run; ``epoch()`` trains and evaluates one epoch and returns its metrics."""

    def __init__(self, config: dict | RunConfig):
        self.cfg = config if isinstance(config, RunConfig) else resolve(config)
        self.task = self.cfg.task_spec
        self.device = pick_device(self.cfg.device)
        self.data = datasets.load(self.task.dataset, self.cfg.data_dir, fraction=self.cfg.fraction,
                                  final_fraction=self.cfg.final_fraction).to(self.device)
        # One fixed initialisation per task and seed, whatever the optimizer (the paper's protocol).
        torch.manual_seed(self.cfg.seed)
        # channels_last: the usual choice on GPUs, and 1.6x faster for fmnist on this CPU
        self.model = build_model(self.task.model).to(self.device, memory_format=torch.channels_last)
        example = torch.zeros(2, *input_shape(self.task.model), device=self.device)
        self.optimizer = build_optimizer(self.cfg, self.model, example)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: self.cfg.rate_factor(e))
        self.monitor = lc.RotationMonitor(self.model, example)
        self.data_rng = torch.Generator().manual_seed(self.cfg.seed)
        self.forward = torch.compile(self.model) if self.cfg.compile else self.model
        self.history: list[dict] = []

    @property
    def done(self) -> bool:
        return len(self.history) >= self.cfg.epochs or (bool(self.history) and self.history[-1]["diverged"])

    def _inputs(self, x: torch.Tensor, augment: bool) -> torch.Tensor:
        if augment:
            x = datasets.shift_flip(x, self.data_rng)
        x = datasets.normalize(x, self.data.mean, self.data.std)
        return x.contiguous(memory_format=torch.channels_last)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def epoch(self) -> dict:
        """Train and evaluate one epoch; returns its record (keys ``layrot.run.EPOCH_KEYS``)."""
        if self.done:
            raise RuntimeError(f"run already finished after {len(self.history)} epochs")
        start, lr = time.perf_counter(), applied_rate(self.optimizer)
        self.model.train()
        # Loss, accuracy and the divergence flag stay on the device: no host sync per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        seen, diverged = 0, False
        for step, (x, y) in enumerate(datasets.batches(self.data.train, self.task.batch_size, self.data_rng), 1):
            with self._autocast():
                logits = self.forward(self._inputs(x, self.task.augment))
                loss = F.cross_entropy(logits.float(), y)
            correct += _correct(logits, y)
            loss_sum += loss.detach() * len(y)
            nonfinite |= ~torch.isfinite(loss.detach())
            seen += len(y)
            if step % DIVERGENCE_CHECK_STEPS == 0 and bool(nonfinite):  # an expected outcome of too-high rates
                diverged = True
                break
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        diverged = diverged or bool(nonfinite)
        if not diverged:
            self.scheduler.step()
        final = diverged or len(self.history) + 1 == self.cfg.epochs
        val, test = (self.data.final_val, self.data.final_test) if final else (self.data.val, self.data.test)
        layers = self.monitor.measure()
        metrics = {
            "epoch": len(self.history) + 1,
            "lr": lr,
            "train_loss": math.nan if diverged else float(loss_sum) / seen,
            "train_acc": int(correct) / seen,
            "val_acc": self.evaluate(val),
            "test_acc": self.evaluate(test),
            "val_images": len(val),
            "test_images": len(test),
            "relative_distance_network": network_relative_distance(
                layers["relative_distance"].values(), self.monitor.initial_norms.values()),
            "epoch_seconds": 0.0,
            "diverged": diverged,
            LAYER_NAMES: list(self.monitor.names),
            **{name: [float(v) for v in per_layer.values()] for name, per_layer in layers.items()},
        }
        metrics["epoch_seconds"] = time.perf_counter() - start
        self.history.append(metrics)
        return metrics

    @torch.inference_mode()
    def evaluate(self, split: datasets.Split) -> float:
        """Accuracy on a split; rows with non-finite logits count as wrong."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for x, y in datasets.batches(split, EVAL_BATCH):
            with self._autocast():
                correct += _correct(self.forward(self._inputs(x, False)), y)
        return int(correct) / len(split)

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "monitor": self.monitor.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda, "data": self.data_rng.get_state()},
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        saved = {k: v for k, v in state["config"].items() if k not in RUNTIME_KEYS}
        if saved != self.cfg.experiment():
            raise ValueError(f"checkpoint is of another run ({saved}); refusing to resume {self.cfg.experiment()}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.monitor.load_state_dict(state["monitor"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.data_rng.set_state(state["rng"]["data"])
        self.history = list(state["history"])


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((logits.argmax(1) == y) & torch.isfinite(logits).all(1)).sum()


def format_epoch(m: dict, epochs: int) -> str:
    rot = m["cosine_distance"]
    return (f"epoch {m['epoch']:>3}/{epochs}  lr {m['lr']:.3g}  loss {m['train_loss']:.4f}  "
            f"train {m['train_acc']:6.2%}  val {m['val_acc']:6.2%}  test {m['test_acc']:6.2%}  "
            f"rotation mean {sum(rot) / len(rot):.3f} min {min(rot):.3f}  {m['epoch_seconds']:.1f}s"
            + ("  DIVERGED" if m["diverged"] else ""))


def train(config: dict, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one configuration without Ray; prints a line per epoch (or calls ``on_epoch``)
    and returns the epoch records (keys: ``layrot.run.EPOCH_KEYS``)."""
    run = Run(config)
    report = on_epoch or (lambda m: print(format_epoch(m, run.cfg.epochs), flush=True))
    while not run.done:
        report(run.epoch())
    return run.history
