"""Tar shards (data/shards.py) on real images: written from an ImageNet-style tree of Fashion-MNIST JPEGs and PNGs, read by index."""

import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from lookupvit.cli import main
from lookupvit.data import load_fashion_mnist
from lookupvit.data.loader import TransformedImages
from lookupvit.data.shards import IMAGE_EXTENSIONS, ShardSource, open_shards, write_shards
from lookupvit.data.sources import CorruptImage, decode_image

CLASSES = ("Pullover", "T-shirt_top", "Trouser")  # sorted, as the tree's folders are
PER_CLASS = 6


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/{train,val}/<class>/<image>: 3 Fashion-MNIST classes x 6 images per split, 32x32 RGB, one PNG per class."""
    root = tmp_path_factory.mktemp("tree")
    test = load_fashion_mnist("test")
    fashion_label = {"T-shirt_top": 0, "Trouser": 1, "Pullover": 2}
    for name in CLASSES:
        picks = (test.labels == fashion_label[name]).nonzero().flatten()[: 2 * PER_CLASS].tolist()
        for split, indices in (("train", picks[:PER_CLASS]), ("val", picks[PER_CLASS:])):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n, index in enumerate(indices):
                image = Image.fromarray(test.images[index, 0].numpy()).convert("RGB").resize((32, 32))
                image.save(folder / (f"{index}.png" if n == 0 else f"{index}.JPEG"))
    return root


@pytest.fixture(scope="module")
def written(tree, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shards") / "out"
    return out, write_shards(tree, out, images_per_shard=4, seed=0, progress=False)


@pytest.fixture
def shards(written, tmp_path) -> Path:
    """A private copy of the written shards, for a test to damage."""
    return Path(shutil.copytree(written[0], tmp_path / "shards"))


def tree_files(tree: Path, split: str) -> dict[bytes, tuple[Path, int]]:
    """Every image of a split by its encoded bytes: (path, label)."""
    return {path.read_bytes(): (path, CLASSES.index(path.parent.name)) for path in sorted((tree / split).rglob("*.*"))}


def image_bytes(source: ShardSource, index: int) -> bytes:
    with open(source.root / source.index.shard_names[source.index.shard[index]], "rb") as handle:
        handle.seek(int(source.index.offset[index]))
        return handle.read(int(source.index.size[index]))


def rewrite_shard(path: Path, change) -> None:
    """Read a shard's members as [name, bytes] pairs, let `change` edit the list, and write it back."""
    with tarfile.open(path) as tar:
        members = [[m.name, tar.extractfile(m).read()] for m in tar.getmembers()]
    change(members)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shards_hold_every_sample_once_with_its_label_and_bytes(tree, written):
    out, summary = written
    assert summary == {"classes": 3, "train": {"images": 18, "shards": 5}, "val": {"images": 18, "shards": 5}}
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt"] + [
        name for s in ("train", "val") for name in [f"{s}-00000{n}.tar" for n in range(5)] + [f"{s}.index.npz"]
    ]
    assert (out / "classes.txt").read_text().splitlines() == list(CLASSES)
    train, val = open_shards(out)
    for split, source in (("train", train), ("val", val)):
        assert source.classes == CLASSES and source.streamed and len(source) == 18
        files = tree_files(tree, split)
        seen = [image_bytes(source, i) for i in range(len(source))]
        assert sorted(seen) == sorted(files)  # each image exactly once, its bytes as they were
        for i, data in enumerate(seen):
            path, label = files[data]
            assert int(source.labels[i]) == label, path
            image = source.read(i)
            assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
            assert torch.equal(image, decode_image(path.read_bytes(), 3, str(path)))
        assert source.labels.tolist() != sorted(source.labels.tolist())  # shuffled: shards mix classes
    assert {IMAGE_EXTENSIONS[train.index.extension[i]] for i in range(18)} == {"jpeg", "png"}  # .JPEG lower-cased


def test_same_tree_and_seed_give_identical_shards(tree, written, tmp_path):
    write_shards(tree, tmp_path / "again", images_per_shard=4, seed=0, progress=False)
    for path in [*written[0].glob("*.tar"), written[0] / "classes.txt"]:  # the .npz index holds zip timestamps
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    write_shards(tree, tmp_path / "other", images_per_shard=4, seed=1, progress=False)
    assert (tmp_path / "other" / "train-000000.tar").read_bytes() != (written[0] / "train-000000.tar").read_bytes()


def test_fingerprint_is_stable_and_changes_with_a_shard(shards):
    first, second = open_shards(shards)[0].fingerprint(), open_shards(shards)[0].fingerprint()
    assert first == second and first["images"] == 18 and first["classes"] == list(CLASSES)
    rewrite_shard(shards / "train-000001.tar", lambda members: members.reverse())
    assert open_shards(shards)[0].fingerprint()["sha256"] != first["sha256"]


def test_without_classes_txt_classes_are_label_numbers(shards):
    (shards / "classes.txt").unlink()
    train, val = open_shards(shards)
    assert train.classes == val.classes == ("0", "1", "2")


def test_open_run_data_detects_the_shards(written):
    from lookupvit.training.config import TrainConfig
    from lookupvit.training.data import open_run_data

    config = TrainConfig(
        dataset=str(written[0]), model="lookupvit_nano4", image_size=32, batch_size=6, amp="fp32", grids=[2, 3], eval_grids=[2, 3]
    )
    data = open_run_data(config)
    assert data.layout == "shards" and data.streamed and data.classes == CLASSES
    assert isinstance(data.train, ShardSource) and len(data.train) == len(data.test) == 18
    assert data.image_shape == (3, 32, 32) and len(data.normalization.mean) == 3


@pytest.mark.parametrize("cut", ["inside an image's data", "between two samples", "inside a header", "before the end marker"])
def test_a_truncated_shard_is_refused(shards, cut):
    path = shards / "train-000002.tar"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    length = {
        "inside an image's data": members[4].offset_data + members[4].size // 2,
        "between two samples": members[4].offset,  # the header of sample 3
        "inside a header": members[4].offset + 100,
        "before the end marker": members[-1].offset_data + members[-1].size,
    }[cut]
    path.write_bytes(path.read_bytes()[:length])
    with pytest.raises(
        ValueError, match=r"shard .*train-000002.tar is truncated or not an uncompressed tar archive .*write it again"
    ):
        open_shards(shards)


def test_a_file_that_is_no_tar_is_refused(shards):
    (shards / "val-000001.tar").write_bytes(b"not a tar archive" * 100)
    with pytest.raises(ValueError, match=r"val-000001.tar is truncated or not an uncompressed tar archive"):
        open_shards(shards)


def test_a_sample_without_a_cls_member_is_refused(shards):
    rewrite_shard(shards / "train-000000.tar", lambda members: members.pop(1))
    with pytest.raises(ValueError, match=r"sample train00000000 of shard .*train-000000.tar has no .cls member"):
        open_shards(shards)


def test_a_sample_without_an_image_is_refused(shards):
    rewrite_shard(shards / "val-000003.tar", lambda members: members.pop(2))
    with pytest.raises(
        ValueError,
        match=r"sample val00000013 of shard .*val-000003.tar has no image member \(members: .cls; expected one of .bmp",
    ):
        open_shards(shards)


@pytest.mark.parametrize("text", [b"two", b"1.5", b"", b"1_0"])
def test_a_cls_that_is_not_a_whole_number_is_refused(shards, text):
    rewrite_shard(shards / "train-000004.tar", lambda members: members[1].__setitem__(1, text))
    with pytest.raises(
        ValueError, match=r"the .cls member of sample train00000016 in shard .*train-000004.tar holds .*not a class index"
    ):
        open_shards(shards)


@pytest.mark.parametrize("label", [b"3", b"-1"])
def test_a_cls_outside_classes_txt_is_refused(shards, label):
    rewrite_shard(shards / "train-000001.tar", lambda members: members[3].__setitem__(1, label))
    with pytest.raises(
        ValueError,
        match=r"sample train00000005 of shard .*train-000001.tar has class -?\d, but .*classes.txt names 3 classes \(0..2\)",
    ):
        open_shards(shards)


def test_missing_and_empty_splits_are_refused(shards):
    for path in shards.glob("val-*.tar"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"no val-\*.tar shards in .*; write them with `lookupvit shards TREE "):
        open_shards(shards)
    with tarfile.open(shards / "val-000000.tar", "w"):
        pass
    with pytest.raises(ValueError, match=r"the val shards in .* \(val-000000.tar ...\) hold no samples"):
        open_shards(shards)
    (shards / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no train-\\*.tar and no val-\\*.tar shards in"):
        open_shards(shards / "nothing")


def test_split_class_lists_must_match_without_classes_txt(shards):
    (shards / "classes.txt").unlink()
    rewrite_shard(shards / "train-000000.tar", lambda members: members[1].__setitem__(1, b"5"))
    with pytest.raises(ValueError, match=r"the train shards in .* have labels 0..5 but the val shards 0..2"):
        open_shards(shards)


def test_a_corrupt_jpeg_reads_as_corrupt_and_the_loader_replaces_it(shards):
    def damage_first_jpeg(members):
        first = next(i for i, (name, _) in enumerate(members) if name.endswith(".jpeg"))
        members[first][1] = members[first][1][:40] + b"\0" * 40

    rewrite_shard(shards / "train-000001.tar", damage_first_jpeg)
    train, _ = open_shards(shards)
    jpeg = IMAGE_EXTENSIONS.index("jpeg")
    broken = next(i for i in range(len(train)) if train.index.shard[i] == 1 and train.index.extension[i] == jpeg)
    with pytest.raises(CorruptImage, match=rf"sample train0000000{broken}.jpeg of shard .*train-000001.tar does not decode"):
        train.read(broken)
    images = TransformedImages(train, transform=lambda image: image, seed=0)
    image, label, replaced, _ = images[(0, broken)]
    assert replaced == 1 and torch.equal(image, train.read(broken + 1)) and label == int(train.labels[broken + 1])
    assert images[(0, broken + 1)][2] == 0


def test_the_writer_refuses_a_used_folder_and_keeps_any_image_format(tree, written, tmp_path):
    with pytest.raises(
        ValueError, match=r"out is not empty \(13 entries, e.g. classes.txt\); shards are written only into a new or empty folder"
    ):
        write_shards(tree, written[0], progress=False)
    with pytest.raises(ValueError, match="images_per_shard must be a positive whole number, got 0"):
        write_shards(tree, tmp_path / "new", images_per_shard=0)
    bmp_tree = Path(shutil.copytree(tree, tmp_path / "bmp_tree"))  # any image-folder suffix goes in as its own bytes
    Image.new("RGB", (8, 8), (200, 10, 10)).save(bmp_tree / "val" / "Trouser" / "extra.bmp")
    write_shards(bmp_tree, tmp_path / "bmp_out", progress=False)
    _, val = open_shards(tmp_path / "bmp_out")
    assert any(val.read(i)[:, 0, 0].tolist() == [200, 10, 10] for i in range(len(val)))


def test_shards_command(tree, tmp_path, capsys):
    out = tmp_path / "cli_shards"
    assert main(["shards", str(tree), str(out), "--images-per-shard", "5", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "train: 18 images in 4 shards" in printed and "val: 18 images in 4 shards" in printed
    assert "lookupvit train --config" in printed and f"--set dataset={out}" in printed
    assert len(open_shards(out)[0]) == 18
    assert main(["shards", str(tree), str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("lookupvit shards: error: ") and "is not empty" in error and "\n" not in error


def test_forked_workers_read_the_same_images(written):
    from lookupvit.data.loader import make_loader

    train, _ = open_shards(written[0])
    expected = [train.read(i) for i in range(len(train))]  # the parent now holds open shard files the workers inherit
    batches = [[(0, i) for i in range(start, len(train), 3)] for start in range(3)]
    loader = make_loader(TransformedImages(train, transform=lambda image: image, seed=0), batches, workers=2, pin_memory=False)
    for batch, (images, labels, replaced, _) in zip(batches, loader):
        assert replaced == 0 and labels.tolist() == [int(train.labels[i]) for _, i in batch]
        assert all(torch.equal(image, expected[i]) for image, (_, i) in zip(images, batch))


def test_the_writer_leaves_an_index_that_spares_reading_every_header(written, monkeypatch, tmp_path):
    import lookupvit.data.shards as shards

    out = written[0]
    assert (out / "train.index.npz").is_file() and (out / "val.index.npz").is_file()
    scanned, _ = open_shards(out)

    def no_scanning(path):
        raise AssertionError(f"{path} was scanned although its index is up to date")

    monkeypatch.setattr(shards, "scan_shard", no_scanning)
    indexed, _ = open_shards(out)
    assert indexed.fingerprint() == scanned.fingerprint() and torch.equal(indexed.read(3), scanned.read(3))
    monkeypatch.undo()
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    with open(copy / "train-000000.tar", "ab") as handle:
        handle.write(b"\0" * 512)  # another size: the index no longer describes the files, so they are scanned
    monkeypatch.setattr(shards, "scan_shard", no_scanning)
    with pytest.raises(AssertionError, match="was scanned"):
        open_shards(copy)
