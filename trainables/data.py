"""Datasets as uint8 tensors, split and normalised the paper's way, batched on the device.

Each dataset is decoded once from its real on-disk format and cached under
``<data root>/cache/<name>.pt`` (rebuilt when a source file changes), so a trial loads it in
a fraction of a second. The paper's protocol: 10% of the training set held out for validation
(the same hold-out for every run), one global mean/std over the training pixels, and for the
augmented tasks random shifts of up to 12.5% (reflect padding) plus horizontal flips, done on
the device for a whole batch at once.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 20190101          # fixes the validation hold-out, identical for every run
VAL_FRACTION = 0.1
SHIFT_FRACTION = 0.125
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")   # Debian's dataset-fashion-mnist
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
CACHE_VERSION = 1


class DatasetUnavailable(FileNotFoundError):
    """A dataset is missing or corrupt and cannot be fetched; the message says what was looked
    for, where, and how to provide it."""


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Absolute data root: ``data_dir``, else ``$LAYROT_DATA``, else ``~/.cache/layrot``.
    Absolute because Ray Tune trials run in a temporary working directory."""
    chosen = data_dir or os.environ.get("LAYROT_DATA") or "~/.cache/layrot"
    return Path(chosen).expanduser().resolve()


# --- in-memory form ----------------------------------------------------------------------

@dataclass
class Split:
    x: torch.Tensor            # uint8, (N, C, H, W)
    y: torch.Tensor            # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Data:
    train: Split
    val: Split                 # per-epoch evaluation subsets
    test: Split
    final_val: Split           # the final epoch's: supersets of val and test (the same when equal)
    final_test: Split
    num_classes: int
    mean: float                # global mean / std of the training pixels, in uint8 units
    std: float

    def to(self, device: torch.device | str) -> Data:
        splits = {id(s): s.to(device) for s in (self.train, self.val, self.test, self.final_val, self.final_test)}
        return Data(*(splits[id(s)] for s in (self.train, self.val, self.test, self.final_val, self.final_test)),
                    self.num_classes, self.mean, self.std)


def load(name: str, data_dir: str | os.PathLike | None = None, *, fraction: float = 1.0,
         final_fraction: float | None = None) -> Data:
    """The dataset ``name`` with the paper's protocol; ``fraction`` < 1 keeps a fixed random
    subset of that size of every split (the validation set stays 10% of the training images).
    ``final_fraction`` (default ``fraction``) sizes the held-out and test splits that score the
    last epoch: a small per-epoch subset keeps curves cheap, the whole split makes the final
    accuracy precise (one image in 10,000 instead of one in 1,000)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    final_fraction = fraction if final_fraction is None else final_fraction
    for key, value in (("fraction", fraction), ("final_fraction", final_fraction)):
        if not 0 < value <= 1:
            raise ValueError(f"{key}={value!r} must be in (0, 1]")
    raw = _cached(name, data_root(data_dir))
    train_idx, val_idx = hold_out(len(raw["train_y"]))
    test_idx = torch.randperm(len(raw["test_y"]), generator=torch.Generator().manual_seed(SPLIT_SEED))

    def head(idx: torch.Tensor, f: float) -> torch.Tensor:
        return idx[:max(1, round(f * len(idx)))]

    train_idx = head(train_idx, fraction)
    train = Split(raw["train_x"][train_idx], raw["train_y"][train_idx])
    val, final_val = (Split(raw["train_x"][head(val_idx, f)], raw["train_y"][head(val_idx, f)])
                      for f in (fraction, final_fraction))
    test, final_test = (Split(raw["test_x"][head(test_idx, f)], raw["test_y"][head(test_idx, f)])
                        for f in (fraction, final_fraction))
    if final_fraction == fraction:
        final_val, final_test = val, test
    mean, std = pixel_stats(train.x)
    return Data(train, val, test, final_val, final_test, int(raw["num_classes"]), mean, std)


def hold_out(n: int, fraction: float = VAL_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices: a fixed random ``fraction`` of ``range(n)`` is held out.
    Both are in random (fixed) order, so a prefix of either is a random subset."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = round(n * fraction)
    return perm[n_val:], perm[:n_val]


def pixel_stats(x: torch.Tensor) -> tuple[float, float]:
    """Exact mean and std of all uint8 pixels, from a 256-bin histogram (no float copy)."""
    counts = torch.bincount(x.reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64)
    total = counts.sum()
    mean = (counts * values).sum() / total
    var = (counts * (values - mean) ** 2).sum() / total
    return float(mean), float(var.sqrt())


# --- batching on the device --------------------------------------------------------------

def batches(split: Split, batch_size: int, generator: torch.Generator | None = None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 x, y) batches of a device-resident split; shuffled when ``generator`` is given
    (a CPU generator, so data order is reproducible and checkpointable on any device)."""
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.y.device) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield split.x[idx], split.y[idx]


def normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (x.float() - mean) / std


def shift_flip(x: torch.Tensor, generator: torch.Generator, max_shift_fraction: float = SHIFT_FRACTION,
               ) -> torch.Tensor:
    """Random integer shifts of up to ``max_shift_fraction`` of the size along each axis, with
    reflect filling (scipy/Keras 'reflect': ... b a | a b c ...), and random horizontal flips:
    one gather for the whole batch. Random draws come from the CPU ``generator``."""
    b, _, h, w = x.shape
    dev = x.device
    dy = torch.randint(-round(max_shift_fraction * h), round(max_shift_fraction * h) + 1, (b, 1), generator=generator)
    dx = torch.randint(-round(max_shift_fraction * w), round(max_shift_fraction * w) + 1, (b, 1), generator=generator)
    flip = torch.rand(b, 1, generator=generator) < 0.5
    rows = _reflect(torch.arange(h) - dy, h)
    cols = _reflect(torch.arange(w) - dx, w)
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(b)[:, None, None]
    out = x[batch.to(dev), :, rows[:, :, None].to(dev), cols[:, None, :].to(dev)]   # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Half-sample symmetric reflection of indices into [0, n) (valid for shifts <= n)."""
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i >= n, 2 * n - 1 - i, i)


# --- decoding and caching ----------------------------------------------------------------

def _cached(name: str, root: Path) -> dict:
    """The decoded dataset from the cache, rebuilt when its source files changed."""
    locate, decode = DATASETS[name]
    sources = locate(root)
    fingerprint = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    cache = root / "cache" / f"{name}.pt"
    if cache.exists():
        try:
            arrays = torch.load(cache, weights_only=True)
            if arrays.get("fingerprint") == fingerprint and arrays.get("version") == CACHE_VERSION:
                return arrays
        except Exception:       # unreadable cache (e.g. interrupted copy): rebuild it
            pass
    arrays = decode(sources)
    arrays.update(fingerprint=fingerprint, version=CACHE_VERSION)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(arrays, tmp)
        os.replace(tmp, cache)  # atomic: concurrent trials never read a half-written cache
    except OSError as exc:      # a read-only data root still works, only slower
        print(f"layrot: cannot cache {name} at {cache} ({exc}); decoding it each time", file=sys.stderr)
        if tmp.exists():
            tmp.unlink()
    return arrays


def _corrupt(what: str, where: Path, why: str, remedy: str) -> DatasetUnavailable:
    return DatasetUnavailable(f"{what} at {where} is unreadable ({why}); {remedy}")


def _download(what: str, fetch: Callable[[], None], root: Path, manual: str) -> None:
    print(f"layrot: {what} not found under {root}; downloading it there", file=sys.stderr)
    try:
        fetch()
    except Exception as exc:    # no network, checksum mismatch, disk full, ...
        why = " ".join(f"{type(exc).__name__}: {exc}".split())   # one line
        raise DatasetUnavailable(f"{what} not found under {root} and its download failed ({why}); {manual}") from None


# Fashion-MNIST: IDX files (gzip or plain).

FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, unsigned bytes), gzip or plain."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise _corrupt("Fashion-MNIST file", path, str(exc), "replace it") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise _corrupt("Fashion-MNIST file", path, "not an unsigned-byte IDX file", "replace it")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(dims)):
        raise _corrupt("Fashion-MNIST file", path, f"{len(data) - offset} bytes for shape {dims}", "replace it")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _fashion_mnist_files(folder: Path) -> list[Path] | None:
    found = []
    for stem in FASHION_MNIST_FILES:
        plain, gz = folder / stem, folder / f"{stem}.gz"
        found.append(plain if plain.exists() else gz if gz.exists() else None)
    return None if None in found else found


def _locate_fashion_mnist(root: Path) -> list[Path]:
    folders = [root / "fashion-mnist", SYSTEM_FASHION_MNIST, root / "FashionMNIST" / "raw"]
    for folder in folders:
        if (files := _fashion_mnist_files(folder)) is not None:
            return files

    def fetch() -> None:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(str(root), download=True)

    _download("Fashion-MNIST", fetch, root,
              f"install Debian's dataset-fashion-mnist or put the four IDX files ({', '.join(FASHION_MNIST_FILES)},"
              f" optionally .gz) in {folders[0]}")
    return _fashion_mnist_files(folders[-1])


def _decode_fashion_mnist(files: list[Path]) -> dict:
    tx, ty, vx, vy = (torch.from_numpy(read_idx(p).copy()) for p in files)
    for x, y, path in ((tx, ty, files[0]), (vx, vy, files[2])):
        if x.ndim != 3 or len(x) != len(y):
            raise _corrupt("Fashion-MNIST", path.parent, f"{len(x)} images but {len(y)} labels", "replace the files")
    return dict(train_x=tx[:, None], train_y=ty.long(), test_x=vx[:, None], test_y=vy.long(), num_classes=10)


# CIFAR-10/100: the "python version" pickles.

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def _cifar_locator(name: str) -> Callable[[Path], list[Path]]:
    folder, train_files, test_files, _, _ = CIFAR[name]

    def locate(root: Path) -> list[Path]:
        paths = [root / folder / f for f in train_files + test_files]
        if not all(p.exists() for p in paths):
            def fetch() -> None:
                from torchvision import datasets
                (datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100)(str(root), download=True)
            _download(name.upper(), fetch, root,
                      f"download the CIFAR python version archive and extract it so that {root / folder} exists")
        return paths

    return locate


def _cifar_decoder(name: str) -> Callable[[list[Path]], dict]:
    folder, train_files, _, label_key, num_classes = CIFAR[name]

    def read(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    entry = {k.decode() if isinstance(k, bytes) else k: v
                             for k, v in pickle.load(f, encoding="bytes").items()}
                x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(entry[label_key], dtype=np.int64)
            except Exception as exc:
                raise _corrupt(name.upper(), path, f"{type(exc).__name__}: {exc}",
                               f"delete {path.parent} to download it again") from None
            if len(x) != len(y) or y.min(initial=0) < 0 or y.max(initial=0) >= num_classes:
                raise _corrupt(name.upper(), path, "labels do not match images", f"delete {path.parent}")
            xs.append(torch.from_numpy(x))
            ys.append(torch.from_numpy(y))
        return torch.cat(xs), torch.cat(ys)

    def decode(paths: list[Path]) -> dict:
        tx, ty = read(paths[:len(train_files)])
        vx, vy = read(paths[len(train_files):])
        return dict(train_x=tx, train_y=ty, test_x=vx, test_y=vy, num_classes=num_classes)

    return decode


# Tiny ImageNet: the official zip's layout; its labelled "val" set serves as the test set
# (the official test labels are not public).

def _locate_tiny_imagenet(root: Path) -> list[Path]:
    base = root / "tiny-imagenet-200"
    needed = [base / "wnids.txt", base / "val" / "val_annotations.txt"]
    if not all(p.exists() for p in needed):
        def fetch() -> None:
            from torchvision.datasets.utils import download_and_extract_archive
            download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5, remove_finished=True)
        _download("Tiny ImageNet", fetch, root,
                  f"download {TINY_IMAGENET_URL} (md5 {TINY_IMAGENET_MD5}) and unzip it in {root}")
    return needed


def _decode_tiny_imagenet(paths: list[Path]) -> dict:
    from PIL import Image

    wnids_file, annotations = paths
    base = wnids_file.parent
    wnids = wnids_file.read_text().split()
    label = {w: i for i, w in enumerate(wnids)}
    train = [(p, label[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    val = []
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label:
            raise _corrupt("Tiny ImageNet", annotations, f"bad line {line!r}", f"delete {base} to download it again")
        val.append((base / "val" / "images" / fields[0], label[fields[1]]))

    def decode(items: list[tuple[Path, int]], what: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.empty(len(items), 3, 64, 64, dtype=torch.uint8)
        for i, (path, _) in enumerate(items):
            if i % 10000 == 0:
                print(f"layrot: decoding Tiny ImageNet {what} images {i}/{len(items)}", file=sys.stderr)
            try:
                with Image.open(path) as image:
                    x[i] = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
            except Exception as exc:
                raise _corrupt("Tiny ImageNet image", path, f"{type(exc).__name__}: {exc}",
                               f"delete {base} to download it again") from None
        return x, torch.tensor([c for _, c in items], dtype=torch.int64)

    if not train or not val:
        raise _corrupt("Tiny ImageNet", base, f"{len(train)} training and {len(val)} validation images",
                       f"delete {base} to download it again")
    tx, ty = decode(train, "training")
    vx, vy = decode(val, "validation")
    return dict(train_x=tx, train_y=ty, test_x=vx, test_y=vy, num_classes=len(wnids))


# name -> (find or fetch the source files under the data root, decode them into tensors)
DATASETS: dict[str, tuple[Callable[[Path], list[Path]], Callable[[list[Path]], dict]]] = {
    "fashion_mnist": (_locate_fashion_mnist, _decode_fashion_mnist),
    "cifar10": (_cifar_locator("cifar10"), _cifar_decoder("cifar10")),
    "cifar100": (_cifar_locator("cifar100"), _cifar_decoder("cifar100")),
    "tiny_imagenet": (_locate_tiny_imagenet, _decode_tiny_imagenet),
}
