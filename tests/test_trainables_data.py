import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from trainables import data
from trainables_formats import tag, write_cifar, write_fashion_mnist, write_idx, write_tiny_imagenet


@pytest.fixture(autouse=True)
def no_system_fashion_mnist(monkeypatch, tmp_path):
    """Tests see only the fixtures they write, never the machine's Debian copy."""
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")


def offline(monkeypatch):
    """Every download fails as it does without network."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def assert_splits_cover(loaded: data.Data, train_x: np.ndarray, train_y: np.ndarray, test_x, test_y):
    """Train and validation partition the training images (10% held out); labels travel with
    their images; the test set is the test images."""
    got_train, got_val = tag(loaded.train.x.numpy()), tag(loaded.val.x.numpy())
    assert sorted(np.concatenate([got_train, got_val])) == list(range(len(train_x)))
    assert len(got_val) == round(0.1 * len(train_x))
    for split, tags in ((loaded.train, got_train), (loaded.val, got_val)):
        np.testing.assert_array_equal(split.x.numpy().reshape(len(tags), -1),
                                      train_x[tags].reshape(len(tags), -1))
        np.testing.assert_array_equal(split.y.numpy(), train_y[tags])
    test_tags = tag(loaded.test.x.numpy())
    assert sorted(test_tags) == list(range(len(test_x)))
    np.testing.assert_array_equal(loaded.test.y.numpy(), test_y[test_tags])


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx_files(tmp_path, compress):
    arrays = write_fashion_mnist(tmp_path / "fashion-mnist", compress=compress)
    loaded = data.load("fashion_mnist", tmp_path)
    assert loaded.num_classes == 10 and loaded.train.x.shape[1:] == (1, 28, 28)
    assert loaded.train.x.dtype == torch.uint8 and loaded.train.y.dtype == torch.int64
    assert_splits_cover(loaded, arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"],
                        arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_is_found_in_the_system_folder(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "debian")
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "debian")
    assert len(data.load("fashion_mnist", tmp_path / "root").test) == 20


def test_truncated_idx_file_is_reported_as_unreadable(tmp_path):
    write_fashion_mnist(tmp_path / "fashion-mnist")
    path = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(data.DatasetUnavailable, match="t10k-images-idx3-ubyte.gz is unreadable"):
        data.load("fashion_mnist", tmp_path)


def test_idx_with_wrong_length_is_reported(tmp_path):
    write_fashion_mnist(tmp_path / "fashion-mnist", compress=False)
    write_idx(tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte", np.zeros(7, np.uint8), compress=False)
    with pytest.raises(data.DatasetUnavailable, match="60 images but 7 labels"):
        data.load("fashion_mnist", tmp_path)


def test_missing_fashion_mnist_offline_says_where_and_how(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load("fashion_mnist", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"Fashion-MNIST not found under {tmp_path}" in message
    assert "download failed" in message and "dataset-fashion-mnist" in message
    assert str(tmp_path / "fashion-mnist") in message


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_python_pickles(tmp_path, name, classes):
    written = write_cifar(tmp_path, classes)
    loaded = data.load(name, tmp_path)
    assert loaded.num_classes == classes and loaded.train.x.shape[1:] == (3, 32, 32)
    assert_splits_cover(loaded, *written["train"], *written["test"])


def test_missing_cifar_offline_says_where_and_how(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(data.DatasetUnavailable, match=f"CIFAR10 not found under {tmp_path} and its download failed"
                       ".*cifar-10-batches-py exists"):
        data.load("cifar10", tmp_path)


def test_corrupt_cifar_pickle(tmp_path):
    write_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(data.DatasetUnavailable, match="data_batch_3 is unreadable.*delete"):
        data.load("cifar10", tmp_path)


def test_tiny_imagenet_layout_decodes_to_tensors(tmp_path):
    wnids = ["n01443537", "n01629819"]
    colours = write_tiny_imagenet(tmp_path, wnids)
    loaded = data.load("tiny_imagenet", tmp_path)
    assert loaded.num_classes == 2
    images = torch.cat([loaded.train.x, loaded.val.x])
    labels = torch.cat([loaded.train.y, loaded.val.y])
    assert images.shape == (6, 3, 64, 64)
    # flat colours survive JPEG almost exactly; each image matches its own class's colours
    for x, y in zip(images, labels):
        rgb = x[:, 32, 32].tolist()
        candidates = [c for (w, _), c in colours.items() if w == wnids[y]]
        assert min(max(abs(a - b) for a, b in zip(rgb, c)) for c in candidates) <= 2
    assert len(loaded.test) == 4
    grey = [x for x in loaded.test.x if (x[0] == x[1]).all() and (x[1] == x[2]).all()]
    assert len(grey) == 1 and abs(int(grey[0][0, 0, 0]) - 128) <= 1


def test_missing_tiny_imagenet_offline_names_the_archive(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(data.DatasetUnavailable, match="tiny-imagenet-200.zip .md5 90528d7ca1a48142e341f4ef8d21d0de"):
        data.load("tiny_imagenet", tmp_path)


def test_decoded_data_is_cached_and_rebuilt_when_a_source_changes(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "fashion-mnist")
    first = data.load("fashion_mnist", tmp_path)
    assert (tmp_path / "cache" / "fashion_mnist.pt").exists()
    decoder = data.DATASETS["fashion_mnist"]
    calls = []
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", (decoder[0], lambda p: calls.append(p) or decoder[1](p)))
    again = data.load("fashion_mnist", tmp_path)
    assert calls == [] and torch.equal(first.train.x, again.train.x)
    source = tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    data.load("fashion_mnist", tmp_path)
    assert len(calls) == 1


def test_fraction_keeps_fixed_random_subsets(tmp_path):
    write_fashion_mnist(tmp_path / "fashion-mnist", n_train=200, n_test=100)
    full = data.load("fashion_mnist", tmp_path)
    part = data.load("fashion_mnist", tmp_path, fraction=0.25)
    assert (len(part.train), len(part.val), len(part.test)) == (45, 5, 25)
    assert set(tag(part.val.x.numpy())) <= set(tag(full.val.x.numpy()))
    assert torch.equal(part.test.x, data.load("fashion_mnist", tmp_path, fraction=0.25).test.x)
    with pytest.raises(ValueError, match="fraction=0 must be in"):
        data.load("fashion_mnist", tmp_path, fraction=0)


def test_hold_out_is_a_fixed_partition():
    train, val = data.hold_out(1000)
    assert len(val) == 100 and len(set(train.tolist()) | set(val.tolist())) == 1000
    assert torch.equal(val, data.hold_out(1000)[1])


def test_pixel_stats_match_numpy():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = data.pixel_stats(x)
    assert mean == pytest.approx(x.numpy().mean(), rel=1e-12)
    assert std == pytest.approx(x.numpy().std(), rel=1e-12)


def test_shift_flip_matches_scipy_reflect_shift():
    """Against scipy.ndimage.shift(order=0, mode='reflect') (Keras' fill), same random draws."""
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = data.shift_flip(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    dy = torch.randint(-4, 5, (16, 1), generator=g)[:, 0]
    dx = torch.randint(-4, 5, (16, 1), generator=g)[:, 0]
    flip = (torch.rand(16, 1, generator=g) < 0.5)[:, 0]
    assert dy.abs().max() == 4 and 0 < flip.sum() < 16
    for i in range(16):
        ref = ndimage.shift(x[i].numpy(), (0, int(dy[i]), int(dx[i])), order=0, mode="reflect")
        if flip[i]:
            ref = ref[:, :, ::-1]
        np.testing.assert_array_equal(out[i].numpy(), ref)


def test_batches_cover_the_split_once():
    split = data.Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    ordered = list(data.batches(split, 4))
    assert [len(y) for _, y in ordered] == [4, 4, 2]
    assert torch.cat([y for _, y in ordered]).tolist() == list(range(10))
    shuffled = list(data.batches(split, 4, torch.Generator().manual_seed(0)))
    ys = torch.cat([y for _, y in shuffled])
    assert sorted(ys.tolist()) == list(range(10)) and ys.tolist() != list(range(10))
    assert all(torch.equal(x.view(-1).long(), y) for x, y in shuffled)


def test_data_root_is_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert data.data_root("rel") == tmp_path / "rel"
    monkeypatch.setenv("LAYROT_DATA", "envdir")
    assert data.data_root() == tmp_path / "envdir"
    monkeypatch.delenv("LAYROT_DATA")
    assert data.data_root() == Path("~/.cache/layrot").expanduser()


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known datasets: fashion_mnist"):
        data.load("mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (data.SYSTEM_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_protocol(tmp_path, monkeypatch):
    monkeypatch.undo()   # see the real system folder
    loaded = data.load("fashion_mnist", tmp_path)
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (54000, 6000, 10000)
    assert torch.bincount(loaded.test.y).tolist() == [1000] * 10
    # one global mean/std of the training pixels; normalised training pixels are standardised
    z = data.normalize(loaded.train.x[:5000], loaded.mean, loaded.std)
    assert 70 < loaded.mean < 76 and abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_read_only_data_root_loads_without_a_cache(tmp_path, capsys):
    write_fashion_mnist(tmp_path / "fashion-mnist")
    (tmp_path / "cache").write_text("a file where the cache folder would go")
    assert len(data.load("fashion_mnist", tmp_path).test) == 20
    assert "cannot cache fashion_mnist" in capsys.readouterr().err
