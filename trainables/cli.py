"""`layrot train`: one training run without Ray, a line per epoch and a final summary."""
from __future__ import annotations

import argparse
import json
import os
import re

SMOKE_EPOCHS = 2
SMOKE_DATA_FRACTION = 0.1
_POWER_OF_THREE = re.compile(r"^3\^(-?\d+)$")


def rate(text: str) -> float:
    """A rate as a number or as a power of three, the paper's grid notation ("3^-3")."""
    if m := _POWER_OF_THREE.match(text.strip()):
        return 3.0 ** int(m.group(1))
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate; write a number or 3^k") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="fmnist", help="task name, see `layrot tasks` (default: fmnist)")
    parser.add_argument("--optimizer", default="sgd", help="sgd | sgd_l2 | adam | rmsprop | adagrad (default: sgd)")
    parser.add_argument("--layca", action="store_true", help="control layer rotation with Layca")
    parser.add_argument("--alpha", type=float, default=0.0, help="eq. 1 layer-wise rate parameter in [-1, 1]")
    parser.add_argument("--rho0", type=rate, default=3.0**-3, help="initial rate, a number or 3^k (default: 3^-3)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data order (default: 0)")
    parser.add_argument("--epochs", type=int, help="override the task's epochs (milestones scale along)")
    parser.add_argument("--data-fraction", type=float, default=1.0, help="use this fraction of the task's data")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--data-dir", help="data root (default: $LAYROT_DATA or ~/.cache/layrot)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="FILE", help="also write the per-epoch metrics to FILE as JSON")
    parser.add_argument("--smoke-test", action="store_true",
                        help=f"{SMOKE_EPOCHS} epochs on {SMOKE_DATA_FRACTION:g} of the task's data (seconds on fmnist)")


def config_from_args(args: argparse.Namespace) -> dict:
    config = {
        "task": args.task, "optimizer": args.optimizer, "layca": args.layca, "alpha": args.alpha,
        "rho0": args.rho0, "seed": args.seed, "epochs": args.epochs, "data_fraction": args.data_fraction,
        "device": args.device, "data_dir": args.data_dir, "bf16": args.bf16, "compile": args.compile,
    }
    if args.smoke_test:
        config.update(epochs=SMOKE_EPOCHS, data_fraction=SMOKE_DATA_FRACTION * args.data_fraction)
    return config


def summary(history: list[dict]) -> str:
    last = history[-1]
    best = max(history, key=lambda m: m["val_acc"])
    rot = last["rotation"]
    status = f"diverged at epoch {last['epoch']}" if last["diverged"] else f"{last['epoch']} epochs"
    return (f"{status} in {sum(m['epoch_seconds'] for m in history):.1f}s: final train {last['train_acc']:.2%} "
            f"val {last['val_acc']:.2%} test {last['test_acc']:.2%}; best val {best['val_acc']:.2%} at epoch "
            f"{best['epoch']} (test {best['test_acc']:.2%}); final rotation mean {sum(rot) / len(rot):.3f}, "
            f"min {min(rot):.3f} over {len(rot)} layers")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from trainables.config import resolve   # validate before the heavy imports
    cfg = resolve(config)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    if args.json:   # before training: a bad path must not cost the run
        from layrot.paths import check_output_file
        check_output_file(args.json, "--json")

    import torch

    from trainables.train import train
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"layrot train: {cfg.task} with {cfg.optimizer}{' + Layca' if cfg.layca else ''}, alpha {cfg.alpha:g}, "
          f"rho0 {cfg.rho0:.4g}, seed {cfg.seed}, {cfg.num_epochs} epochs, milestones {list(cfg.milestones)}", flush=True)
    history = train(cfg.to_dict())
    print(summary(history))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"config": cfg.to_dict(), "history": history}, f, indent=1)
    return 0
