"""Caption data (data/captions.py): the COCO and Karpathy readers, their errors, the Dataset, and the layout task."""

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookupvit.data import load_fashion_mnist
from lookupvit.data.captions import (
    CaptionImageDataset,
    layout_caption_paths,
    read_coco_captions,
    read_karpathy_split,
    read_layout_items,
    write_layout_captions,
)

SMALL = {"train_images": 40, "val_images": 10, "seed": 0, "progress": False}  # 50 canvases: well under a second
CANVAS = 64  # the default canvas_size

# The test's own statement of the vocabulary: noun -> (Fashion-MNIST label, plural?).
NOUNS = {}
for label, (singular, plural) in enumerate(
    [("t-shirt", "t-shirts"), ("pair of trousers", "pairs of trousers"), ("pullover", "pullovers"), ("dress", "dresses"),
     ("coat", "coats"), ("sandal", "sandals"), ("shirt", "shirts"), ("sneaker", "sneakers"), ("bag", "bags"), ("boot", "boots")]
):  # fmt: skip
    NOUNS[singular], NOUNS[plural] = (label, False), (label, True)
COUNTS = {"a": 1, "two": 2, "three": 3, "four": 4}
NOUN = "(?:" + "|".join(sorted(map(re.escape, NOUNS), key=len, reverse=True)) + ")"
NP = rf"(?:a|two|three|four) {NOUN}"
NP_LIST = rf"{NP}(?:, {NP})* and {NP}|{NP}"
SIDE = "on the left|on the right|at the top|at the bottom"
REGIONS = {  # phrase -> (row third, column third), 0..2
    "in the top left corner": (0, 0), "at the top": (0, 1), "in the top right corner": (0, 2),
    "on the left": (1, 0), "in the middle": (1, 1), "on the right": (1, 2),
    "in the bottom left corner": (2, 0), "at the bottom": (2, 1), "in the bottom right corner": (2, 2),
}  # fmt: skip
REGION = "|".join(REGIONS)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout") / "captions"
    return root, write_layout_captions(root, **SMALL)


# --- an independent reading of the captions -------------------------------------------------------


def centre(item: dict) -> tuple[float, float]:
    left, top, right, bottom = item["box"]
    return (left + right) / 2, (top + bottom) / 2


def noun_phrase(text: str) -> tuple[int, int]:
    """(label, count) of "a bag", "two pairs of trousers", ...; the number agrees with the noun."""
    word, noun = text.split(" ", 1)
    label, plural = NOUNS[noun]
    assert plural == (COUNTS[word] > 1), text
    return label, COUNTS[word]


def split_list(text: str) -> list[str]:
    head, _, last = text.rpartition(" and ")
    return [*head.split(", "), last] if head else [text]


def holds(way: str, a: dict, b: dict) -> bool:
    """a lies `way` of b, clearly: centres at least 8 px apart that way (half the smallest item)."""
    (ax, ay), (bx, by) = centre(a), centre(b)
    return {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[way] >= 8


def of_class(items: list[dict], label: int, count: int) -> list[dict]:
    """The items of a class, which a noun phrase names all of."""
    group = [item for item in items if item["label"] == label]
    assert len(group) == count, f"the phrase counts {count}, the canvas shows {len(group)}"
    return group


def check_caption(caption: str, items: list[dict]) -> str:
    """Assert the caption is true of the items (their classes and boxes); return which kind it is."""
    classes = Counter(item["label"] for item in items)
    if match := re.fullmatch(rf"(?:(two|three|four) items: )?({NP_LIST})", caption):
        assert match[1] is None or COUNTS[match[1]] == len(items)
        assert Counter(dict(noun_phrase(phrase) for phrase in split_list(match[2]))) == classes
        return "contents"
    if match := re.fullmatch(rf"(?:one item: a|a picture of a|a single) ({NOUN})(?: ({REGION}))?", caption):
        assert len(items) == 1 and NOUNS[match[1]] == (items[0]["label"], False)
        if match[2]:
            check_region(match[2], items[0])
        return "single"
    if match := re.fullmatch(rf"({NP}) (to the left of|to the right of|above|below|under) ({NP})", caption):
        way = {"to the left of": "left", "to the right of": "right", "under": "below"}.get(match[2], match[2])
        xs, ys = of_class(items, *noun_phrase(match[1])), of_class(items, *noun_phrase(match[3]))
        assert all(holds(way, x, y) for x in xs for y in ys)
        return "relation"
    if match := re.fullmatch(rf"({NP}) ({SIDE}) and ({NP}) ({SIDE})", caption):
        sides = {match[2], match[4]}
        assert sides in ({"on the left", "on the right"}, {"at the top", "at the bottom"})
        first, second = (match[1], match[3]) if match[2] in ("on the left", "at the top") else (match[3], match[1])
        xs, ys = of_class(items, *noun_phrase(first)), of_class(items, *noun_phrase(second))
        assert len(xs) + len(ys) == len(items)
        assert all(holds("left" if "on the left" in sides else "above", x, y) for x in xs for y in ys)
        return "sides"
    if match := re.fullmatch(rf"from (left to right|top to bottom): ({NP_LIST})", caption):
        axis = 0 if match[1] == "left to right" else 1
        named = [noun_phrase(phrase) for phrase in split_list(match[2])]
        ordered = sorted(items, key=lambda item: centre(item)[axis])
        assert [count for _, count in named] == [1] * len(items)
        assert [label for label, _ in named] == [item["label"] for item in ordered]
        assert all(centre(b)[axis] - centre(a)[axis] >= 4 for a, b in itertools.pairwise(ordered))
        return "order"
    if match := re.fullmatch(rf"(a {NOUN}) ({REGION})", caption):
        check_region(match[2], of_class(items, *noun_phrase(match[1]))[0])
        return "region"
    raise AssertionError(f"not in the caption grammar: {caption!r}")


def check_region(phrase: str, item: dict) -> None:
    x, y = centre(item)
    assert (min(int(y * 3 // CANVAS), 2), min(int(x * 3 // CANVAS), 2)) == REGIONS[phrase], (phrase, item)


# --- the layout task -----------------------------------------------------------------------------


def test_every_caption_is_true_of_its_canvas(written):
    root, _ = written
    kinds = Counter()
    for split in ("train", "val"):
        data = json.loads(layout_caption_paths(root, split)[0].read_text())
        captions = {image["id"]: [] for image in data["images"]}
        for annotation in data["annotations"]:
            captions[annotation["image_id"]].append(annotation["caption"])
        for image in data["images"]:
            assert len(captions[image["id"]]) == len(set(captions[image["id"]])) == 5
            for caption in captions[image["id"]]:
                kinds[check_caption(caption, image["items"])] += 1
    assert set(kinds) == {"contents", "single", "relation", "sides", "order", "region"}, kinds


def test_canvases_show_real_items_in_their_boxes(written):
    root, _ = written
    for split, source in (("train", "train"), ("val", "test")):
        fashion = load_fashion_mnist(source)
        data = json.loads(layout_caption_paths(root, split)[0].read_text())
        counts = Counter()
        for image in data["images"]:
            pixels = np.array(Image.open(root / "images" / split / image["file_name"]))
            assert pixels.shape == (CANVAS, CANVAS) and pixels.dtype == np.uint8
            items, outside = image["items"], np.ones_like(pixels, dtype=bool)
            counts[len(items)] += 1
            assert len(items) == 1 or len({item["label"] for item in items}) >= 2
            for item, other in itertools.combinations(items, 2):  # no two boxes overlap
                a, b = item["box"], other["box"]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            for item in items:
                left, top, right, bottom = item["box"]
                assert (
                    0 <= left and 0 <= top and right <= CANVAS and bottom <= CANVAS and 16 <= right - left == bottom - top <= 28
                )
                assert int(fashion.labels[item["source"]]) == item["label"]  # the item is from the right split
                expected = Image.fromarray(fashion.images[item["source"], 0].numpy()).resize(
                    (right - left, bottom - top), Image.BILINEAR
                )
                assert np.abs(pixels[top:bottom, left:right].astype(float) - np.array(expected)).mean() < 3
                outside[top:bottom, left:right] = False
            assert not pixels[outside].any()  # nothing drawn outside the boxes
        assert set(counts) == {1, 2, 3, 4} or split == "val"  # 40 train canvases show every item count


def test_round_trip_through_the_coco_reader_and_the_items(written):
    root, manifest = written
    train, val = (read_coco_captions(*layout_caption_paths(root, split)) for split in ("train", "val"))
    assert len(train) == 40 and len(val) == 10 and train.skipped_without_captions == 0
    assert [image.key for image in train] == list(range(1, 41)) and val[0].key == 1_000_001
    assert all(len(image.captions) == 5 and image.path.is_file() for image in train)
    items = read_layout_items(root, "train")
    assert set(items) == set(train.references()) and all(1 <= len(value) <= 4 for value in items.values())
    assert len(manifest["files"]) == 52 and manifest["settings"]["canvas_size"] == CANVAS and manifest["software"]["pillow"]
    assert "captions_train.json" in manifest["files"] and "images/val/000009.png" in manifest["files"]


def test_same_seed_same_bytes_other_seed_other_canvases(tmp_path, written):
    root, manifest = written
    again = write_layout_captions(tmp_path / "again", **SMALL)
    assert again["files"] == manifest["files"]
    for name in manifest["files"]:
        assert (tmp_path / "again" / name).read_bytes() == (root / name).read_bytes()
    other = write_layout_captions(tmp_path / "other", **{**SMALL, "seed": 1})
    assert other["files"]["captions_train.json"] != manifest["files"]["captions_train.json"]
    longer = write_layout_captions(tmp_path / "longer", **{**SMALL, "train_images": 41})  # each canvas has its own stream
    assert all(longer["files"][name] == digest for name, digest in manifest["files"].items() if name.startswith("images/"))


def test_rerun_verifies_refuses_other_settings_and_overwrites(tmp_path):
    root = tmp_path / "layout"
    small = {**SMALL, "train_images": 4, "val_images": 2}
    first = write_layout_captions(root, **small)
    stamp = (root / "images/train/000000.png").stat().st_mtime_ns
    assert write_layout_captions(root, **small) == first and (root / "images/train/000000.png").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"other settings .*'seed': \(0, 3\).*overwrite=True"):
        write_layout_captions(root, **{**small, "seed": 3})
    (root / "images/train/000001.png").write_bytes(b"not a png")
    (root / "images/val/extra.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"images/val/extra.png is not in the manifest; images/train/000001.png has changed"):
        write_layout_captions(root, **small)
    rewritten = write_layout_captions(root, **{**small, "seed": 3}, overwrite=True)
    assert rewritten["settings"]["seed"] == 3 and not (root / "images/val/extra.png").exists()
    (root / "manifest.json").write_text("{truncated")  # a damaged manifest: refused, and overwrite=True is the way out
    with pytest.raises(ValueError, match="not valid JSON.*overwrite=True"):
        write_layout_captions(root, **small)
    assert write_layout_captions(root, **small, overwrite=True) == first
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "photo.jpg").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not a layout-caption folder"):
        write_layout_captions(tmp_path / "theirs", **small, overwrite=True)
    with pytest.raises(ValueError, match="item_size must be"):
        write_layout_captions(tmp_path / "new", **small, canvas_size=40)


# --- the Karpathy reader -------------------------------------------------------------------------


def test_karpathy_split_reads_the_written_images(tmp_path, written):
    root, _ = written
    coco = {split: read_coco_captions(*layout_caption_paths(root, split)) for split in ("train", "val")}
    images = []
    for split, caption_set in coco.items():
        for n, image in enumerate(caption_set):
            karpathy_split = {"val": "val" if n < 5 else "test", "train": "restval" if n % 4 == 0 else "train"}[split]
            sentences = [{"raw": f"  {caption} ", "tokens": caption.split()} for caption in image.captions]
            images.append(
                {
                    "filepath": split,
                    "filename": image.path.name,
                    "split": karpathy_split,
                    "cocoid": image.key,
                    "sentences": sentences,
                }
            )
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    train = read_karpathy_split(path, root / "images", "train")
    assert train.references() == coco["train"].references()  # restval included, raw captions stripped
    assert len(read_karpathy_split(path, root / "images", "train", include_restval=False)) == 30
    val, test = (read_karpathy_split(path, root / "images", split) for split in ("val", "test"))
    assert [image.key for image in val] + [image.key for image in test] == [image.key for image in coco["val"]]
    assert val[0].path == root / "images" / "val" / "000000.png"


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.fixture
def images_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for n in range(3):
        Image.fromarray(np.full((6, 8), 40 * n, dtype=np.uint8)).save(folder / f"{n}.png")
    return folder


def coco_file(tmp_path: Path, value) -> Path:
    path = tmp_path / "captions.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def coco(images=(0, 1, 2), captions=((0, "a"), (1, "b"), (2, "c"))) -> dict:
    return {
        "images": [{"id": n, "file_name": f"{n}.png"} for n in images],
        "annotations": [{"id": k, "image_id": n, "caption": text} for k, (n, text) in enumerate(captions)],
    }


@pytest.mark.parametrize(
    "value, error, message",
    [
        ("", ValueError, r"captions.json is empty; expected a caption file in the COCO captions layout"),
        ("{'images': ", ValueError, r"is not valid JSON"),
        ([], ValueError, r"the top level is a JSON list, not an object; expected the COCO captions layout"),
        ({"images": []}, ValueError, r"the top level has no 'annotations'; expected the COCO captions layout"),
        ({"dataset": "coco", "images": []}, ValueError, r"is in the Karpathy layout .* read it with read_karpathy_split"),
        (coco(captions=()), ValueError, r"holds no annotations \(its 'annotations' list is empty\)"),
        ({**coco(), "images": [{"id": 0, "filename": "0.png"}]}, ValueError, r"images\[0\] has no 'file_name'; expected the COCO"),
        ({**coco(), "annotations": [{"image_id": 0, "text": "a"}]}, ValueError, r"annotations\[0\] has no 'caption'"),
        (coco(images=(0, 0)), ValueError, r"image id 0 is listed twice"),
        ({**coco(), "images": [{"id": 0, "file_name": 3}]}, ValueError, r"the file_name of images\[0\] is 3; a file name must be"),
        ({**coco(), "annotations": [{"image_id": [0], "caption": "a"}]}, ValueError, r"the image_id of annotations\[0\] is \[0\]"),
        (coco(captions=((0, "a"), (7, "b"), (9, "c"))), ValueError, r"2 annotations refer to image ids that 'images' does not list \(7, 9\)"),
        (coco(captions=((0, "a"), (1, 5), (2, "c"))), ValueError, r"the caption of annotations\[1\] \(id 1, image 1\) is a JSON int .*not a string"),
        (coco(captions=((0, "a"), (1, None), (2, "c"))), ValueError, r"is a JSON NoneType .*not a string"),
        (coco(captions=((0, "a"), (1, "b"), (2, " \n"))), ValueError, r"the caption of annotations\[2\] \(id 2, image 2\) is empty"),
        (coco(captions=((0, "a"), (0, "b"))), ValueError, r"2 of 3 images have no caption \(ids 1, 2\); pass images_without_captions='skip'"),
        (coco(images=range(9), captions=[(n, "x") for n in range(9)]), FileNotFoundError,
         r"6 of the 9 images listed in .* are missing under .*images \(3.png, 4.png, 5.png, 6.png, 7.png and 1 more\); pass the folder"),
    ],
)  # fmt: skip
def test_coco_reader_names_the_problem(tmp_path, images_dir, value, error, message):
    with pytest.raises(error, match=message):
        read_coco_captions(coco_file(tmp_path, value), images_dir)


def test_coco_reader_skips_images_without_captions_on_request(tmp_path, images_dir):
    path = coco_file(tmp_path, coco(captions=((2, " a bag "), (0, "a shoe"), (2, "one bag"))))
    with pytest.warns(UserWarning, match=r"left out 1 of 3 images that have no caption \(ids 1\)"):
        captions = read_coco_captions(path, images_dir, images_without_captions="skip")
    assert captions.references() == {0: ["a shoe"], 2: ["a bag", "one bag"]} and captions.skipped_without_captions == 1
    with pytest.raises(ValueError, match="images_without_captions must be 'error' or 'skip'"):
        read_coco_captions(path, images_dir, images_without_captions="drop")
    with pytest.raises(FileNotFoundError, match="is not a folder; pass the folder that holds the images"):
        read_coco_captions(path, images_dir / "nowhere")
    with pytest.raises(FileNotFoundError, match="no caption file at"):
        read_coco_captions(tmp_path / "missing.json", images_dir)


def karpathy(**changes) -> dict:
    image = {
        "filepath": "",
        "filename": "0.png",
        "split": "val",
        "cocoid": 5,
        "sentences": [{"raw": "a bag", "tokens": ["a", "bag"]}],
    }
    return {"dataset": "coco", "images": [{**image, **changes}]}


@pytest.mark.parametrize(
    "value, message",
    [
        ("  \n", r"is empty; expected a caption file in the Karpathy layout"),
        ({"dataset": "coco"}, r"the top level has no 'images'; expected the Karpathy layout"),
        (coco(), r"is in the COCO captions layout .* read it with read_coco_captions"),
        (
            {"images": [{"filename": "0.png", "split": "val", "sentences": []}]},
            r"images\[0\] has no 'cocoid'; expected the Karpathy layout",
        ),
        (karpathy(split="holdout"), r"images\[0\] has split 'holdout'"),
        (karpathy(split="train"), r"holds no images of split 'val'"),
        (karpathy(sentences=[{"tokens": ["a"]}]), r"images\[0\].sentences\[0\] has no 'raw'"),
        (karpathy(sentences=[{"raw": ""}]), r"the caption of images\[0\].sentences\[0\] \(cocoid 5\) is empty"),
        (karpathy(sentences=[{"raw": ["a", "bag"]}]), r"is a JSON list .*not a string"),
        (karpathy(sentences=[]), r"1 of 1 images have no caption \(ids 5\)"),
        (karpathy(filename="gone.png"), r"1 of the 1 images listed in .* are missing under .* \(gone.png\)"),
        (karpathy(cocoid=None), r"the cocoid of images\[0\] is None; image ids must be whole numbers"),
    ],
)
def test_karpathy_reader_names_the_problem(tmp_path, images_dir, value, message):
    path = coco_file(tmp_path, value)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_karpathy_split(path, images_dir, "val")


def test_karpathy_reader_refuses_an_unknown_split(tmp_path, images_dir):
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'restval'"):
        read_karpathy_split(coco_file(tmp_path, karpathy()), images_dir, "restval")


# --- the Dataset ---------------------------------------------------------------------------------


def test_dataset_yields_images_in_the_asked_mode_and_their_keys(written):
    root, _ = written
    captions = read_coco_captions(*layout_caption_paths(root, "val"))
    grey = CaptionImageDataset(captions, mode="L")
    image, key = grey[3]
    assert image.shape == (1, CANVAS, CANVAS) and image.dtype == torch.uint8 and key == captions[3].key
    assert torch.equal(image[0], torch.from_numpy(np.array(Image.open(captions[3].path))))
    transforms = pytest.importorskip("torchvision.transforms")
    rgb = CaptionImageDataset(captions, transform=transforms.Compose([transforms.Resize(32), transforms.ToTensor()]), mode="RGB")
    images, keys = next(iter(torch.utils.data.DataLoader(rgb, batch_size=4)))
    assert (
        images.shape == (4, 3, 32, 32)
        and images.dtype == torch.float32
        and keys.tolist() == [image.key for image in captions][:4]
    )
    assert torch.equal(images[:, 0], images[:, 1])  # a grey PNG as RGB: three equal channels
    with pytest.raises(ValueError, match="mode must be 'RGB'"):
        CaptionImageDataset(captions, mode="CMYK")
