"""`layrot tasks`: the task registry as a table."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke-test", action="store_true",
                        help="also build each task's model and run one forward pass on CPU (seconds)")


def table() -> str:
    from layrot.tasks import TASKS

    header = ("name", "dataset", "model", "epochs", "rate x decay at epochs", "L2 lambda", "augment", "data", "")
    rows = [header] + [
        (t.name, t.dataset, t.model, str(t.epochs), f"x{t.decay:g} at {', '.join(map(str, t.milestones))}",
         f"{t.l2:g}", "yes" if t.augment else "no", f"{t.data_fraction:.0%}", t.description)
        for t in TASKS.values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["batch size 128 for every task; rates decay per epoch (epochs counted from 0)"])


def run(args: argparse.Namespace) -> int:
    print(table())
    if args.smoke_test:
        import torch

        from layrot_core import kernel_layers
        from trainables.models import build_model, input_shape
        from layrot.tasks import TASKS
        for task in TASKS.values():
            model = build_model(task.model).eval()
            with torch.no_grad():
                logits = model(torch.zeros(1, *input_shape(task.model)))
            print(f"{task.name}: {task.model} builds, {len(kernel_layers(model))} kernel layers, "
                  f"output {tuple(logits.shape)}")
    return 0
