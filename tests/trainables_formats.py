"""Tiny datasets written in each dataset's real on-disk format, for the loader tests.

Every image carries its own index in its first pixels, so a test can tell which source image
ended up where after splitting and shuffling.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def tagged_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first two values are (i // 256, i % 256)."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) // 256, np.arange(n) % 256
    return x


def tag(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1]


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """The IDX format of (Fashion-)MNIST: 0, 0, 0x08 (ubyte), ndim, big-endian dims, data."""
    payload = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 20, compress: bool = True) -> dict:
    arrays = {
        "train-images-idx3-ubyte": tagged_images(n_train, (28, 28), 1),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": tagged_images(n_test, (28, 28), 2),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


def write_cifar(root: Path, classes: int, n_per_file: int = 10) -> dict:
    """CIFAR "python version": pickled dicts with bytes keys (as the real Python 2 pickles
    load), 'data' rows of 3072 bytes (R, G, B planes of 32x32)."""
    if classes == 10:
        folder, train_files, test_files, label_key = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"
    else:
        folder, train_files, test_files, label_key = "cifar-100-python", ["train"], ["test"], b"fine_labels"
    out = {}
    for split, files, seed in (("train", train_files, 3), ("test", test_files, 4)):
        n = n_per_file * len(files)
        x = tagged_images(n, (3, 32, 32), seed)
        y = (np.arange(n) * 7) % classes
        for k, name in enumerate(files):
            part = slice(k * n_per_file, (k + 1) * n_per_file)
            entry = {b"data": x[part].reshape(n_per_file, 3072), label_key: [int(v) for v in y[part]]}
            (root / folder).mkdir(parents=True, exist_ok=True)
            with open(root / folder / name, "wb") as f:
                pickle.dump(entry, f, protocol=2)
        out[split] = (x, y)
    return out


def write_tiny_imagenet(root: Path, wnids: list[str], per_class: int = 3, n_val: int = 4) -> dict:
    """The official zip's layout: wnids.txt, train/<wnid>/images/<wnid>_<i>.JPEG,
    val/images/val_<i>.JPEG with val/val_annotations.txt (file, wnid, box). Images are flat
    colours (exact through JPEG); the first validation image is greyscale."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    colours = {}
    for c, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            colour = (40 * c + 10 * i, 200 - 30 * i, 60 + 50 * c)
            Image.new("RGB", (64, 64), colour).save(folder / f"{wnid}_{i}.JPEG", quality=100)
            colours[(wnid, i)] = colour
    lines = []
    for i in range(n_val):
        wnid = wnids[i % len(wnids)]
        if i == 0:
            Image.new("L", (64, 64), 128).save(base / "val" / "images" / f"val_{i}.JPEG", quality=100)
        else:
            Image.new("RGB", (64, 64), (10 * i, 20, 30)).save(base / "val" / "images" / f"val_{i}.JPEG", quality=100)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return colours
