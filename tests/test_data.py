import gzip
import json
import shutil

import pytest
import torch

from lookupvit.data import (
    FASHION_MNIST_CLASSES,
    ImageDataset,
    Normalization,
    check_class_names,
    dataset_normalization,
    load_fashion_mnist,
    load_image_folder,
)


def test_fashion_mnist_is_the_real_dataset():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.classes == FASHION_MNIST_CLASSES
    assert torch.equal(test.labels.bincount(), torch.full((10,), 1000))
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]  # the first upstream labels: ankle boot, t-shirt, ...


def test_missing_or_corrupt_fashion_mnist_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    source = load_fashion_mnist.__globals__["FASHION_MNIST_SEARCH"][0]
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(f"{source}/{name}", tmp_path / name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[100] = (payload[100] + 1) % 10  # one flipped label
    labels.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(ValueError, match="checksum"):
        load_fashion_mnist("test", root=tmp_path)
    labels.write_bytes(labels.read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("validation")


def write_png(path, value, size=(20, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)


def test_image_folder_loads_classes_resizes_and_skips_unreadable_files(tmp_path):
    write_png(tmp_path / "cat" / "a.png", 10)
    write_png(tmp_path / "cat" / "b.png", 20)
    write_png(tmp_path / "dog" / "sub" / "c.png", 200)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        dataset = load_image_folder(tmp_path, (16, 16))
    assert dataset.classes == ("cat", "dog") and dataset.labels.tolist() == [0, 0, 1]
    assert dataset.images.shape == (3, 3, 16, 16) and dataset.images.dtype == torch.uint8
    assert dataset.images[2, 0, 8, 8] == 200 and dataset.images[2, 2, 8, 8] == 55


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", (8, 8))
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path, (8, 8))
    write_png(tmp_path / "cat" / "a.png", 10)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class has no images"):
        load_image_folder(tmp_path, (8, 8))


def test_download_verifies_and_fails_clearly_offline(tmp_path, monkeypatch):
    import lookupvit.data.fashion_mnist as data

    monkeypatch.setattr(data, "FASHION_MNIST_URL", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(RuntimeError, match="Offline\\? On Debian/Ubuntu run `apt-get install dataset-fashion-mnist`"):
        data.load_fashion_mnist("test", root=tmp_path / "fm", download=True)
    assert not list((tmp_path / "fm").glob("*.partial"))


def test_select_classes_keeps_and_relabels_only_those_classes():
    dataset = ImageDataset(torch.arange(12, dtype=torch.uint8).view(6, 1, 1, 2), torch.tensor([0, 1, 2, 3, 2, 0]), ("a", "b", "c", "d"))
    picked = dataset.select_classes([2, 0])
    assert picked.classes == ("c", "a")
    assert picked.labels.tolist() == [1, 0, 0, 1]  # images 0, 2, 4, 5 in their original order
    assert picked.images[:, 0, 0, 0].tolist() == [0, 4, 8, 10]
    assert dataset.select_classes(None) is dataset
    for bad in ([4], [1, 1], []):
        with pytest.raises(ValueError, match="distinct ids in 0..3"):
            dataset.select_classes(bad)


def test_normalization_is_per_channel_from_a_random_sample_of_the_whole_set():
    # Sorted like an image folder: the first 10,000 images are all of the dark class.
    dark = torch.full((10_000, 3, 4, 4), 20, dtype=torch.uint8)
    bright = torch.stack([torch.full((4, 4), value, dtype=torch.uint8) for value in (200, 120, 60)]).expand(10_000, -1, -1, -1)
    dataset = ImageDataset(torch.cat([dark, bright]), torch.cat([torch.zeros(10_000), torch.ones(10_000)]).long(), ("dark", "bright"))
    normalization = dataset_normalization(dataset, seed=0)
    full_mean = dataset.images.float().div(255).mean(dim=(0, 2, 3))
    full_std = dataset.images.float().div(255).transpose(0, 1).flatten(1).std(dim=1)
    torch.testing.assert_close(torch.tensor(normalization.mean), full_mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.tensor(normalization.std), full_std, atol=0.01, rtol=0)
    assert normalization.mean[0] > normalization.mean[1] > normalization.mean[2]
    normalized = normalization(dataset.images)
    torch.testing.assert_close(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.05, rtol=0)
    assert Normalization.from_json(json.loads(json.dumps(normalization.to_json()))) == normalization
    assert Normalization.from_json([0.3, 0.35]) == Normalization(0.3, 0.35)  # model files written before per-channel statistics


def test_class_names_must_line_up():
    check_class_names(("a", "b"), ("a", "b"), "the model", "the data")
    with pytest.raises(ValueError, match=r"the data has classes \['b', 'a'\] but the model has \['a', 'b'\] \(the same class names in another order\)"):
        check_class_names(("a", "b"), ("b", "a"), "the model", "the data")
    with pytest.raises(ValueError, match=r"only in the model: \['b'\]; only in the data: \['c'\]"):
        check_class_names(("a", "b"), ("a", "c"), "the model", "the data")
