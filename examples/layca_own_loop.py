"""Layca and RotationMonitor in a plain PyTorch training loop (the README example, runnable).

Trains the small Fashion-MNIST CNN with Layca(SGD) at the paper's rate 3^-3, a per-epoch step
schedule from torch's MultiStepLR, and prints every layer's rotation after each epoch.

    .venv/bin/python examples/layca_own_loop.py               # 3 epochs on 20% of the data
    .venv/bin/python examples/layca_own_loop.py --smoke-test  # a few seconds
"""
from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

import layrot_core as lc
from trainables import data
from trainables.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.2, help="fraction of Fashion-MNIST used")
    parser.add_argument("--smoke-test", action="store_true", help="1 epoch on 2%% of the data")
    args = parser.parse_args()
    if args.smoke_test:
        args.epochs, args.fraction = 1, 0.02
    torch.manual_seed(0)
    fmnist = data.load("fashion_mnist", fraction=args.fraction)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return data.normalize(x, fmnist.mean, fmnist.std)

    # --- the README example -------------------------------------------------------------
    model = build_model("fmnist_cnn")
    x0 = prepare(fmnist.train.x[:2])                    # one input fixes the layers' forward order
    opt = lc.Layca(lc.param_groups(model, alpha=0.0, example_input=x0), base=torch.optim.SGD, lr=3**-3)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.2)  # stepped per epoch
    monitor = lc.RotationMonitor(model, example_input=x0)
    for epoch in range(args.epochs):
        for x, y in data.batches(fmnist.train, 128, torch.Generator().manual_seed(epoch)):
            opt.zero_grad()
            F.cross_entropy(model(prepare(x)), y).backward()
            opt.step()
        schedule.step()
        rotation = monitor.cosine_distances()          # {layer: 1 - cos(w_t, w_0)}, forward order
        # --------------------------------------------------------------------------------
        model.eval()
        with torch.no_grad():
            accuracy = (model(prepare(fmnist.test.x)).argmax(1) == fmnist.test.y).float().mean().item()
        model.train()
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.3f}; rotation "
              + " ".join(f"{d:.3f}" for d in rotation.values()), flush=True)
    print("layers:", " ".join(rotation))


if __name__ == "__main__":
    main()
