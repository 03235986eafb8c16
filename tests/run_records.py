"""Hand-made epoch records with every key of layrot.run.EPOCH_KEYS, for store and callback tests."""
from __future__ import annotations


def epoch_record(epoch: int, val: float, cosine: list[float], *, lr: float = 0.1, seconds: float = 2.0,
                 diverged: bool = False, images: tuple[int, int] = (600, 1000)) -> dict:
    """One epoch of a trial whose layers moved by ``cosine``; the other numbers are simple
    functions of the arguments so a test can recompute any summary by hand."""
    n = len(cosine)
    return {"epoch": epoch, "lr": lr, "train_loss": float("nan") if diverged else 2.0 / epoch,
            "train_acc": 0.5 + 0.1 * epoch, "val_acc": val, "test_acc": val - 0.05,
            "val_images": images[0], "test_images": images[1], "relative_distance_network": 0.1 * epoch,
            "epoch_seconds": seconds, "diverged": diverged,
            "layer_names": [f"features.{i}.weight" for i in range(n)], "cosine_distance": list(cosine),
            "relative_distance": [2 * c for c in cosine], "norm_ratio": [1.0 + c for c in cosine]}
