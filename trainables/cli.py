"""`layrot train`: one training run without Ray, a line per epoch and a final summary."""
from __future__ import annotations

import argparse
import json
import os

from layrot.run import SETTINGS, field_doc, parse_rates, rate_label

SMOKE_EPOCHS = 2
SMOKE_DATA_FRACTION = 0.1


def rate(text: str) -> float:
    """A rate on the command line: a number or a power of three ("3^-3")."""
    try:
        (value,) = parse_rates(text, text_numbers=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


class _Renamed(argparse.Action):
    """An option that no longer exists: say what replaced it."""

    def __init__(self, *args, replacement: str, **kwargs):
        super().__init__(*args, nargs=0, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is gone: {self.replacement}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="fmnist", help="task name, see `layrot tasks` (default: fmnist)")
    parser.add_argument("--optimizer", "--setting", dest="setting", default="sgd",
                        help=f"setting: {' | '.join(SETTINGS)} (default: sgd)")
    parser.add_argument("--layca", action=_Renamed, replacement="write --optimizer layca-sgd (or layca-adam, ...)")
    parser.add_argument("--alpha", type=float, default=0.0, help=field_doc("alpha"))
    parser.add_argument("--rho0", type=rate, default=3.0**-3, help="initial rate, a number or 3^k (default: 3^-3)")
    parser.add_argument("--seed", type=int, default=0, help=f"{field_doc('seed')} (default: 0)")
    parser.add_argument("--epochs", type=int, help="override the task's epochs (milestones scale along)")
    parser.add_argument("--data-fraction", type=float, default=1.0, help=field_doc("data_fraction"))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--data-dir", help="data root (default: $LAYROT_DATA or ~/.cache/layrot)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="FILE", help="also write the per-epoch records to FILE as JSON")
    parser.add_argument("--smoke-test", action="store_true",
                        help=f"{SMOKE_EPOCHS} epochs on {SMOKE_DATA_FRACTION:g} of the task's data (seconds on fmnist)")


def config_from_args(args: argparse.Namespace) -> dict:
    config = {
        "task": args.task, "setting": args.setting, "alpha": args.alpha, "rho0": args.rho0, "seed": args.seed,
        "epochs": args.epochs, "data_fraction": args.data_fraction, "device": args.device,
        "data_dir": args.data_dir, "bf16": args.bf16, "compile": args.compile,
    }
    if args.smoke_test:
        config.update(epochs=SMOKE_EPOCHS, data_fraction=SMOKE_DATA_FRACTION * args.data_fraction)
    return config


def summary(history: list[dict]) -> str:
    """The run's outcome in one line: final accuracies (the last epoch scores the whole splits)
    and final rotation. No "best epoch": runs are selected by validation accuracy across
    configurations (``layrot.run.best_configuration``), never within one run."""
    last = history[-1]
    rot = last["cosine_distance"]
    status = f"diverged at epoch {last['epoch']}" if last["diverged"] else f"{last['epoch']} epochs"
    return (f"{status} in {sum(m['epoch_seconds'] for m in history):.1f}s: final train {last['train_acc']:.2%} "
            f"val {last['val_acc']:.2%} ({last['val_images']} images) test {last['test_acc']:.2%} "
            f"({last['test_images']} images); final rotation mean {sum(rot) / len(rot):.3f}, "
            f"min {min(rot):.3f} over {len(rot)} layers")


def run(args: argparse.Namespace) -> int:
    from layrot.run import resolve   # validate before the heavy imports

    cfg = resolve(config_from_args(args))
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    if args.json:   # before training: a bad path must not cost the run
        from layrot.paths import check_output_file
        check_output_file(args.json, "--json")

    import torch

    from trainables.train import train
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"layrot train: {cfg.task} with {cfg.setting}, alpha {cfg.alpha:g}, rho0 {rate_label(cfg.rho0)}, "
          f"seed {cfg.seed}, {cfg.epochs} epochs, milestones {list(cfg.milestones)}", flush=True)
    history = train(cfg.to_dict())
    print(summary(history))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"config": cfg.to_dict(), "history": history}, f, indent=1)
    return 0
