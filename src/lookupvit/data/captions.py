"""Image captions: COCO-format readers, a Dataset over them, and an offline captioning task from real pixels.

Readers. `read_coco_captions` reads the captions_train2017.json layout, `read_karpathy_split` the
Karpathy dataset_coco.json layout; both give a CaptionSet: per image a stable key (the COCO image
id), the image's path and its reference captions (stripped strings). `CaptionImageDataset` yields
(image, key); the references stay on the CaptionSet under the same key, which is the shape caption
metrics (pycocoevalcap: {key: [captions]}) want. A file that is not what it should be is refused with
a message that names the problem and the fix, before any training starts.

The layout task. No caption set is offline here, so `write_layout_captions(root)` builds one from real
Fashion-MNIST pixels: each grey canvas shows 1-4 items at varied positions and sizes (no two boxes
overlap), and each canvas gets several different captions composed from the items' classes and where
they lie — "a sandal to the left of a bag", "two shirts above a sneaker", "a bag on the right and a
sandal on the left", "three items: a coat, a bag and a boot", "from left to right: ...". Relations,
orders and regions cannot be told from the classes alone: a captioner has to see where items are.
Every caption is true of its canvas by construction (relations from the items' box centres; the
grammar is below). Train canvases take their items from Fashion-MNIST's train split, val canvases
from its test split. It is written in the COCO layout (root/captions_{train,val}.json,
root/images/{train,val}/*.png), so training reads it through the same reader as real COCO, with a
manifest of every file's SHA-256; the same settings again only verify, others are refused unless
overwrite=True (the conventions of data/generated.py, shared with data/motion.py).
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .generated import (
    SPLITS,
    FolderKind,
    check_positive_whole_numbers,
    check_seed,
    existing_manifest,
    files_except_manifest,
    progress_bar,
    settings_json,
    sha256_file,
    write_staged,
)

COCO_LAYOUT = (
    "COCO captions layout (captions_train2017.json: {'images': [{'id', 'file_name'}], 'annotations': [{'image_id', 'caption'}]})"
)
KARPATHY_LAYOUT = (
    "Karpathy layout (dataset_coco.json: {'images': [{'filepath', 'filename', 'split', 'cocoid', 'sentences': [{'raw'}]}]})"
)
KARPATHY_SPLITS = ("train", "val", "test", "restval")
SHOWN = 5  # how many offending entries an error names


# ---------------------------------------------------------------------------------------------------
# Caption sets and their readers


@dataclass(frozen=True)
class CaptionedImage:
    """One image of a caption set: its key, where its file is, and its reference captions."""

    key: int | str  # the COCO image id: stable across releases, what predictions and references are matched by
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class CaptionSet:
    """The images of one split with their reference captions, in file order."""

    images: tuple[CaptionedImage, ...]
    skipped_without_captions: int = 0  # images the file lists without any caption, left out on request

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> CaptionedImage:
        return self.images[index]

    def __iter__(self) -> Iterator[CaptionedImage]:
        return iter(self.images)

    def references(self) -> dict[int | str, list[str]]:
        """{key: [captions]}: the references a caption metric scores predictions against."""
        return {image.key: list(image.captions) for image in self.images}


def _shown(values: list) -> str:
    """The first few values, and how many more there are."""
    shown = ", ".join(str(value) for value in values[:SHOWN])
    return shown + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else "")


def _load_json(path: Path, layout: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"no caption file at {path}")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path} is empty; expected a caption file in the {layout}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected a caption file in the {layout}") from None


def _require_keys(value: object, keys: tuple[str, ...], what: str, path: Path, layout: str) -> None:
    """`value` (called `what` in messages) is a JSON object with all of `keys`."""
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} is a JSON {type(value).__name__}, not an object; expected the {layout}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise ValueError(f"{path}: {what} has no {' or '.join(map(repr, missing))}; expected the {layout}")


def _list_field(value: dict, key: str, path: Path, layout: str) -> list:
    if not isinstance(value[key], list):
        raise ValueError(f"{path}: {key!r} is a JSON {type(value[key]).__name__}, not a list; expected the {layout}")
    return value[key]


def _check_key(value: object, what: str, path: Path) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{path}: {what} is {value!r}; image ids must be whole numbers (or strings)")
    return value


def _check_file_name(value: object, what: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: {what} is {value!r}; a file name must be a non-empty string")
    return value


def _clean_caption(value: object, where: str, path: Path) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path}: the caption of {where} is a JSON {type(value).__name__} ({str(value)[:40]!r}), not a string")
    text = value.strip()
    if not text:
        raise ValueError(f"{path}: the caption of {where} is empty; remove that caption or give it its text")
    return text


def _caption_set(entries: list[tuple], path: Path, image_root: Path, images_without_captions: str) -> CaptionSet:
    """The CaptionSet of (key, image path, captions) entries, after the checks both layouts share."""
    bare = [key for key, _, captions in entries if not captions]
    if bare and images_without_captions == "error":
        raise ValueError(
            f"{path}: {len(bare)} of {len(entries)} images have no caption (ids {_shown(bare)}); "
            "pass images_without_captions='skip' to leave them out"
        )
    if bare:
        warnings.warn(
            f"{path}: left out {len(bare)} of {len(entries)} images that have no caption (ids {_shown(bare)})", stacklevel=3
        )
    kept = [CaptionedImage(key, image_path, tuple(captions)) for key, image_path, captions in entries if captions]
    if not kept:
        raise ValueError(f"{path}: none of its {len(entries)} images has a caption")
    missing = [str(image.path.relative_to(image_root)) for image in kept if not image.path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(kept)} images listed in {path} are missing under {image_root} "
            f"({_shown(missing)}); pass the folder that holds them as image_root (for COCO 2017 the train2017/ or val2017/ folder)"
        )
    return CaptionSet(tuple(kept), skipped_without_captions=len(bare))


def _check_arguments(image_root: Path, images_without_captions: str) -> None:
    if images_without_captions not in ("error", "skip"):
        raise ValueError(f"images_without_captions must be 'error' or 'skip', got {images_without_captions!r}")
    if not image_root.is_dir():
        raise FileNotFoundError(f"image_root {image_root} is not a folder; pass the folder that holds the images")


def read_coco_captions(
    annotations_json: str | os.PathLike, image_root: str | os.PathLike, *, images_without_captions: str = "error"
) -> CaptionSet:
    """The images of a COCO captions file (captions_train2017.json layout) found under image_root, with their captions.

    Images come in the file's order, each caption in the order of its annotations. An image without
    any caption is an error unless images_without_captions='skip' (then a warning counts them).
    """
    path, image_root = Path(annotations_json), Path(image_root)
    _check_arguments(image_root, images_without_captions)
    data = _load_json(path, COCO_LAYOUT)
    if isinstance(data, dict) and "annotations" not in data and "images" in data and "dataset" in data:
        raise ValueError(
            f"{path} is in the Karpathy layout (it has 'dataset' and no 'annotations'); read it with read_karpathy_split"
        )
    _require_keys(data, ("images", "annotations"), "the top level", path, COCO_LAYOUT)
    images, annotations = _list_field(data, "images", path, COCO_LAYOUT), _list_field(data, "annotations", path, COCO_LAYOUT)
    if not annotations:
        raise ValueError(f"{path} holds no annotations (its 'annotations' list is empty), so there are no captions to read")
    files = {}  # image id -> file name, in file order
    for n, image in enumerate(images):
        _require_keys(image, ("id", "file_name"), f"images[{n}]", path, COCO_LAYOUT)
        key = _check_key(image["id"], f"the id of images[{n}]", path)
        if key in files:
            raise ValueError(f"{path}: image id {key} is listed twice in 'images' (images[{n}] again)")
        files[key] = _check_file_name(image["file_name"], f"the file_name of images[{n}]", path)
    captions = {key: [] for key in files}
    unknown = []
    for n, annotation in enumerate(annotations):
        _require_keys(annotation, ("image_id", "caption"), f"annotations[{n}]", path, COCO_LAYOUT)
        key = _check_key(annotation["image_id"], f"the image_id of annotations[{n}]", path)
        caption = _clean_caption(annotation["caption"], f"annotations[{n}] (id {annotation.get('id')}, image {key})", path)
        if key in captions:
            captions[key].append(caption)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} annotations refer to image ids that 'images' does not list ({_shown(sorted(set(unknown), key=str))}); "
            "the annotations and the image list must come from the same file (an edited or merged file?)"
        )
    return _caption_set(
        [(key, image_root / name, captions[key]) for key, name in files.items()], path, image_root, images_without_captions
    )


def read_karpathy_split(
    dataset_json: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    *,
    include_restval: bool = True,
    images_without_captions: str = "error",
) -> CaptionSet:
    """The images of one Karpathy split ("train", "val" or "test") of dataset_coco.json, found under image_root.

    An image's path is image_root/filepath/filename (filepath is e.g. "val2014"; files without it,
    like the Flickr ones, give image_root/filename). "train" includes the "restval" images unless
    include_restval=False: the customary 113k training images.
    """
    path, image_root = Path(dataset_json), Path(image_root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    _check_arguments(image_root, images_without_captions)
    wanted = {"train", "restval"} if split == "train" and include_restval else {split}
    data = _load_json(path, KARPATHY_LAYOUT)
    if isinstance(data, dict) and "annotations" in data:
        raise ValueError(f"{path} is in the COCO captions layout (it has 'annotations'); read it with read_coco_captions")
    _require_keys(data, ("images",), "the top level", path, KARPATHY_LAYOUT)
    entries, seen = [], set()
    for n, image in enumerate(_list_field(data, "images", path, KARPATHY_LAYOUT)):
        _require_keys(image, ("filename", "split", "cocoid", "sentences"), f"images[{n}]", path, KARPATHY_LAYOUT)
        if image["split"] not in KARPATHY_SPLITS:
            raise ValueError(
                f"{path}: images[{n}] has split {image['split']!r}; the {KARPATHY_LAYOUT} knows {', '.join(KARPATHY_SPLITS)}"
            )
        if image["split"] not in wanted:
            continue
        key = _check_key(image["cocoid"], f"the cocoid of images[{n}]", path)
        if key in seen:
            raise ValueError(f"{path}: cocoid {key} is listed twice in split {split!r} (images[{n}] again)")
        seen.add(key)
        if not isinstance(image["sentences"], list):
            raise ValueError(f"{path}: the 'sentences' of images[{n}] is not a list; expected the {KARPATHY_LAYOUT}")
        captions = []
        for m, sentence in enumerate(image["sentences"]):
            _require_keys(sentence, ("raw",), f"images[{n}].sentences[{m}]", path, KARPATHY_LAYOUT)
            captions.append(_clean_caption(sentence["raw"], f"images[{n}].sentences[{m}] (cocoid {key})", path))
        name = _check_file_name(image["filename"], f"the filename of images[{n}]", path)
        entries.append((key, image_root / image.get("filepath", "") / name, captions))
    if not entries:
        raise ValueError(f"{path} holds no images of split {split!r}")
    return _caption_set(entries, path, image_root, images_without_captions)


# ---------------------------------------------------------------------------------------------------
# The Dataset


def open_image(path: Path, mode: str):
    """The image file as a PIL image in `mode` ("RGB" or "L"), fully decoded (the file is closed on return)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"no image at {path} (moved or deleted since the captions were read?)") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read {path} as an image: {error}") from None


def pil_to_uint8(image) -> Tensor:
    """A PIL image ("L" or "RGB") as uint8 (C, H, W)."""
    channels = len(image.getbands())
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width, channels).permute(2, 0, 1).contiguous()


class CaptionImageDataset(torch.utils.data.Dataset):
    """(image, key) for every image of a CaptionSet; its captions are caption_set.references()[key].

    The image is read with PIL, converted to `mode` ("RGB" or "L"), then passed to `transform` (any
    callable taking a PIL image, e.g. a torchvision transform); without one it is uint8 (C, H, W).
    """

    def __init__(self, caption_set: CaptionSet, transform: Callable | None = None, mode: str = "RGB"):
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' (3 channels) or 'L' (grey, 1 channel), got {mode!r}")
        self.caption_set, self.transform, self.mode = caption_set, transform, mode

    def __len__(self) -> int:
        return len(self.caption_set)

    def __getitem__(self, index: int) -> tuple[Tensor, int | str]:
        entry = self.caption_set[index]
        image = open_image(entry.path, self.mode)
        return (self.transform(image) if self.transform is not None else pil_to_uint8(image)), entry.key


# ---------------------------------------------------------------------------------------------------
# The layout task: what a canvas shows, and what may be said of it
#
# Grammar. NP(class, k) is "a <noun>" for k = 1, "two/three/four <nouns>" otherwise, and always
# names *every* item of that class on the canvas. A canvas with 2+ items shows 2+ classes.
#   contents  "<NP>, <NP> and <NP>", "three items: <NP>, <NP> and <NP>"   the exact classes and counts
#   relation  "<NP x> to the left of | to the right of | above | below | under <NP y>"
#             every x lies that way of every y (the axis where their centres differ most)
#   sides     "<NP x> on the left and <NP y> on the right", "... at the top and ... at the bottom" (either order)
#             the canvas holds just these two classes, and the relation holds as above
#   order     "from left to right: a <noun>, a <noun> and a <noun>" (also "from top to bottom: ...")
#             the items by centre, each at least ORDER_GAP px past the one before
#   region    "a <noun> in the top left corner | at the top | on the left | in the middle | ..."
#             the only item of its class has its centre in that third of the canvas (rows, columns)
#   single    "a bag", "a single bag", "one item: a bag", "a picture of a bag", "a single bag on the left"

NOUNS = {  # Fashion-MNIST label -> (singular, plural). Every singular starts with a consonant: "a" fits all.
    0: ("t-shirt", "t-shirts"),
    1: ("pair of trousers", "pairs of trousers"),
    2: ("pullover", "pullovers"),
    3: ("dress", "dresses"),
    4: ("coat", "coats"),
    5: ("sandal", "sandals"),
    6: ("shirt", "shirts"),
    7: ("sneaker", "sneakers"),
    8: ("bag", "bags"),
    9: ("boot", "boots"),
}
COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATION_PHRASES = {"left": ("to the left of",), "right": ("to the right of",), "above": ("above",), "below": ("below", "under")}
REGION_PHRASES = {
    ("top", "left"): "in the top left corner",
    ("top", "centre"): "at the top",
    ("top", "right"): "in the top right corner",
    ("middle", "left"): "on the left",
    ("middle", "centre"): "in the middle",
    ("middle", "right"): "on the right",
    ("bottom", "left"): "in the bottom left corner",
    ("bottom", "centre"): "at the bottom",
    ("bottom", "right"): "in the bottom right corner",
}
ORDER_GAP = 6.0  # px between consecutive centres before "from left to right" may list them in that order
MAX_CAPTIONS = 6  # a single-item canvas has six true captions in this grammar
VAL_ID_OFFSET = 1_000_000  # val image ids start here, so train and val keys never collide (as in COCO)
FORMAT = "lookupvit-layout-captions/1"


@dataclass(frozen=True)
class LayoutItem:
    """One Fashion-MNIST item on a canvas."""

    label: int  # Fashion-MNIST class
    box: tuple[int, int, int, int]  # (left, top, right, bottom) px, right and bottom exclusive: the scaled 28x28 frame
    source: int  # index of the item's image in its Fashion-MNIST split

    @property
    def centre(self) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (left + right) / 2, (top + bottom) / 2


def relation(a: LayoutItem, b: LayoutItem) -> str:
    """Where a lies from b, along the axis on which their centres differ most: "left", "right", "above" or "below".

    Boxes that do not overlap are apart by half their sides summed (>= 16 px at the default sizes)
    on at least one axis, so the relation is never a close call.
    """
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def noun_phrase(label: int, count: int) -> str:
    return f"{COUNT_WORDS[count]} {NOUNS[label][0 if count == 1 else 1]}"


def join_phrases(phrases: list[str]) -> str:
    """The phrases as a list in words: x; x and y; x, y and z."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def group_relation(group_x: list[LayoutItem], group_y: list[LayoutItem]) -> str | None:
    """The relation every item of group_x has to every item of group_y, or None if they differ."""
    relations = {relation(x, y) for x in group_x for y in group_y}
    return relations.pop() if len(relations) == 1 else None


def content_captions(groups: dict[int, list[LayoutItem]]) -> list[str]:
    total = sum(len(items) for items in groups.values())
    captions = []
    for order in itertools.permutations(groups):
        listed = join_phrases([noun_phrase(label, len(groups[label])) for label in order])
        captions += [listed, f"{NUMBER_WORDS[total]} items: {listed}"]
    return captions


def relation_captions(groups: dict[int, list[LayoutItem]]) -> list[str]:
    captions = []
    for x, y in itertools.permutations(groups, 2):
        way = group_relation(groups[x], groups[y])
        if way is not None:
            captions += [
                f"{noun_phrase(x, len(groups[x]))} {phrase} {noun_phrase(y, len(groups[y]))}" for phrase in RELATION_PHRASES[way]
            ]
    return captions


def side_captions(groups: dict[int, list[LayoutItem]]) -> list[str]:
    if len(groups) != 2:
        return []
    x, y = groups
    way = group_relation(groups[x], groups[y])
    if way is None:
        return []
    if way in ("right", "below"):  # make x the one on the left or at the top
        x, y, way = y, x, {"right": "left", "below": "above"}[way]
    first, second = ("on the left", "on the right") if way == "left" else ("at the top", "at the bottom")
    phrase_x, phrase_y = noun_phrase(x, len(groups[x])), noun_phrase(y, len(groups[y]))
    return [f"{phrase_x} {first} and {phrase_y} {second}", f"{phrase_y} {second} and {phrase_x} {first}"]


def order_captions(items: list[LayoutItem]) -> list[str]:
    captions = []
    for axis, words in ((0, "from left to right"), (1, "from top to bottom")):
        ordered = sorted(items, key=lambda item: item.centre[axis])
        if all(b.centre[axis] - a.centre[axis] >= ORDER_GAP for a, b in itertools.pairwise(ordered)):
            captions.append(f"{words}: " + join_phrases([noun_phrase(item.label, 1) for item in ordered]))
    return captions


def region_phrase(item: LayoutItem, canvas_size: int) -> str:
    """Where the item's centre is: which third of the rows and which third of the columns."""

    def third(value: float, names: tuple[str, str, str]) -> str:
        return names[0] if value < canvas_size / 3 else names[2] if value > 2 * canvas_size / 3 else names[1]

    x, y = item.centre
    return REGION_PHRASES[third(y, ("top", "middle", "bottom")), third(x, ("left", "centre", "right"))]


def region_captions(groups: dict[int, list[LayoutItem]], canvas_size: int) -> list[str]:
    return [
        f"{noun_phrase(label, 1)} {region_phrase(items[0], canvas_size)}" for label, items in groups.items() if len(items) == 1
    ]


def single_captions(item: LayoutItem, canvas_size: int) -> list[str]:
    noun, where = NOUNS[item.label][0], region_phrase(item, canvas_size)
    return [f"a {noun}", f"a single {noun}", f"one item: a {noun}", f"a picture of a {noun}", f"a single {noun} {where}"]


def caption_families(items: list[LayoutItem], canvas_size: int) -> dict[str, list[str]]:
    """Every true caption of the canvas in this grammar, by kind."""
    groups = {label: [item for item in items if item.label == label] for label in sorted({item.label for item in items})}
    if len(items) == 1:
        return {"single": single_captions(items[0], canvas_size), "region": region_captions(groups, canvas_size)}
    return {
        "contents": content_captions(groups),
        "relation": relation_captions(groups),
        "sides": side_captions(groups),
        "order": order_captions(items),
        "region": region_captions(groups, canvas_size),
    }


def choose_captions(rng: np.random.Generator, families: dict[str, list[str]], count: int) -> list[str] | None:
    """`count` different captions, taking from each kind in turn (in a random order) so the references vary in kind;
    None if the canvas has fewer than `count` different true captions."""
    pools = {name: list(dict.fromkeys(captions)) for name, captions in sorted(families.items()) if captions}
    if len({caption for captions in pools.values() for caption in captions}) < count:
        return None
    names = [list(pools)[i] for i in rng.permutation(len(pools))]
    chosen = []
    while len(chosen) < count:
        for name in names:
            remaining = [caption for caption in pools[name] if caption not in chosen]
            if remaining and len(chosen) < count:
                chosen.append(remaining[int(rng.integers(len(remaining)))])
    return chosen


# ---------------------------------------------------------------------------------------------------
# The layout task: drawing, rendering and writing canvases


@dataclass(frozen=True)
class LayoutSettings:
    """Everything the canvases depend on; the manifest records it and a rerun must match it."""

    train_images: int
    val_images: int
    seed: int
    canvas_size: int  # canvas side in pixels
    item_size: tuple[int, int]  # an item's side in pixels, a whole number uniform in [low, high]
    max_items: int  # items per canvas, uniform in 1..max_items
    captions_per_image: int

    def check(self) -> None:
        check_positive_whole_numbers(self, ("train_images", "val_images", "canvas_size", "max_items", "captions_per_image"))
        check_seed(self.seed)
        if self.train_images >= VAL_ID_OFFSET:
            raise ValueError(f"train_images must be below {VAL_ID_OFFSET} (val image ids start there), got {self.train_images}")
        low, high = self.item_size
        if not (isinstance(low, int) and isinstance(high, int) and 4 <= low <= high <= self.canvas_size // 2):
            # Four items of the largest size still fit side by side in a 2x2 arrangement.
            raise ValueError(
                f"item_size must be whole numbers (low, high) with 4 <= low <= high <= canvas_size / 2, got {self.item_size}"
            )
        if self.max_items > max(COUNT_WORDS):
            raise ValueError(f"max_items must be at most {max(COUNT_WORDS)} (the captions count in words), got {self.max_items}")
        if self.captions_per_image > MAX_CAPTIONS:
            raise ValueError(
                f"captions_per_image must be at most {MAX_CAPTIONS} (what a single-item canvas allows), got {self.captions_per_image}"
            )

    def to_json(self) -> dict:
        return settings_json(self)


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_boxes(rng: np.random.Generator, sides: list[int], canvas_size: int, tries: int = 100) -> list[tuple] | None:
    """A box per side at a uniform position where it overlaps no box before it; None if one does not fit in `tries`."""
    boxes = []
    for side in sides:
        for _ in range(tries):
            left, top = (int(value) for value in rng.integers(0, canvas_size - side + 1, size=2))
            box = (left, top, left + side, top + side)
            if not any(overlaps(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def make_canvas(settings: LayoutSettings, split: str, index: int, item_labels: Tensor) -> tuple[list[LayoutItem], list[str]]:
    """Canvas `index` of `split`: its items and its captions, from its own random stream (changing a count leaves the others alone).

    The number of items is uniform in 1..max_items. The rest of a draw is thrown away and drawn again
    when its items do not fit without overlap, when 2+ items share one class (nothing to relate), or
    when the canvas has fewer true captions than asked.
    """
    rng = np.random.default_rng([settings.seed, list(SPLITS).index(split), index])
    count = int(rng.integers(1, settings.max_items + 1))  # drawn once, so redraws leave the item count uniform
    for _ in range(1000):
        sources = [int(value) for value in rng.integers(len(item_labels), size=count)]
        labels = [int(item_labels[source]) for source in sources]
        sides = [int(value) for value in rng.integers(settings.item_size[0], settings.item_size[1] + 1, size=count)]
        boxes = place_boxes(rng, sides, settings.canvas_size)
        if boxes is None or (count > 1 and len(set(labels)) == 1):
            continue
        items = [LayoutItem(label, box, source) for label, box, source in zip(labels, boxes, sources)]
        captions = choose_captions(rng, caption_families(items, settings.canvas_size), settings.captions_per_image)
        if captions is not None:
            return items, captions
    raise RuntimeError(
        f"could not draw canvas {index} of {split} in 1000 tries with {settings}; use a larger canvas_size or smaller item_size"
    )


def render_canvas(items: list[LayoutItem], item_images: Tensor, canvas_size: int) -> np.ndarray:
    """uint8 (canvas_size, canvas_size): each item's 28x28 image scaled (antialiased bilinear) into its box, on black."""
    canvas = torch.zeros(canvas_size, canvas_size)
    for item in items:
        left, top, right, bottom = item.box
        image = item_images[item.source].float()[None]  # (1, 1, 28, 28)
        sprite = F.interpolate(image, size=(bottom - top, right - left), mode="bilinear", antialias=True, align_corners=False)[
            0, 0
        ]
        canvas[top:bottom, left:right] = torch.maximum(canvas[top:bottom, left:right], sprite)
    return canvas.round().clamp(0, 255).to(torch.uint8).numpy()


def image_id(split: str, index: int) -> int:
    return (VAL_ID_OFFSET if split == "val" else 0) + index + 1


def write_split(folder: Path, split: str, count: int, settings: LayoutSettings, source, progress) -> dict[str, str]:
    """`count` canvases as folder/images/<split>/<n>.png and their captions as folder/captions_<split>.json; {relative path: sha256}.

    `source` is the Fashion-MNIST split (an ImageDataset) the items come from (SPLITS).
    """
    from PIL import Image

    (folder / "images" / split).mkdir(parents=True)
    digits = max(6, len(str(count - 1)))
    files, images, annotations = {}, [], []
    for index in range(count):
        items, captions = make_canvas(settings, split, index, source.labels)
        name = f"{index:0{digits}d}.png"
        relative = f"images/{split}/{name}"
        Image.fromarray(render_canvas(items, source.images, settings.canvas_size)).save(folder / relative, format="PNG")
        files[relative] = sha256_file(folder / relative)
        key = image_id(split, index)
        images.append(
            {
                "id": key,
                "file_name": name,
                "width": settings.canvas_size,
                "height": settings.canvas_size,
                "items": [item_json(item) for item in items],
            }
        )
        annotations += [{"id": key * 10 + n, "image_id": key, "caption": caption} for n, caption in enumerate(captions)]
        progress.update()
    info = {
        "description": "Fashion-MNIST items laid out on a canvas, captioned by class and position",
        "format": FORMAT,
        "split": split,
        "fashion_mnist_split": SPLITS[split],
    }
    relative = f"captions_{split}.json"
    (folder / relative).write_text(json.dumps({"info": info, "images": images, "annotations": annotations}, indent=1) + "\n")
    files[relative] = sha256_file(folder / relative)
    return files


def item_json(item: LayoutItem) -> dict:
    return {
        "label": item.label,
        "name": FASHION_MNIST_CLASSES[item.label],
        "noun": NOUNS[item.label][0],
        "box": list(item.box),
        "source": item.source,
    }


def layout_caption_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(captions JSON, image folder) of a split of the layout task: the arguments read_coco_captions takes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Path(root) / f"captions_{split}.json", Path(root) / "images" / split


def read_layout_items(root: str | os.PathLike, split: str) -> dict[int, list[LayoutItem]]:
    """{image id: its items (class, box, source index)} of a split of the layout task, as written beside the captions."""
    annotations_json, _ = layout_caption_paths(root, split)
    images = json.loads(annotations_json.read_text())["images"]
    return {
        image["id"]: [LayoutItem(item["label"], tuple(item["box"]), item["source"]) for item in image["items"]]
        for image in images
    }


def software_versions() -> dict:
    import PIL

    return {"numpy": np.__version__, "pillow": PIL.__version__, "torch": torch.__version__}


LAYOUT_CAPTIONS = FolderKind(
    FORMAT, what="layout captions", folder="layout-caption folder", items="canvases", listed_files=files_except_manifest
)


def write_layout_captions(
    root: str | os.PathLike,
    *,
    train_images: int,
    val_images: int,
    seed: int,
    canvas_size: int = 64,
    item_size: tuple[int, int] = (16, 28),
    max_items: int = 4,
    captions_per_image: int = 5,
    fashion_mnist_root: str | os.PathLike | None = None,
    download: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write (or verify) the layout task under root; returns the manifest (format, settings, software, files: {path: sha256}).

    root/captions_{train,val}.json (COCO layout; each image entry also lists its "items": class,
    box, source index), root/images/{train,val}/<n>.png (grey, canvas_size square) and
    root/manifest.json. Read a split with read_coco_captions(*layout_caption_paths(root, split)).
    Fashion-MNIST is found as load_fashion_mnist finds it, downloaded (verified) only with download=True.
    The output is a function of the settings: the same settings give the same bytes.
    """
    root = Path(root)
    settings = LayoutSettings(train_images, val_images, seed, canvas_size, tuple(item_size), max_items, captions_per_image)
    settings.check()
    manifest = existing_manifest(root, settings.to_json(), overwrite, LAYOUT_CAPTIONS)
    if manifest is not None:
        return manifest

    def write_contents(folder: Path) -> dict:
        files = {}
        with progress_bar(LAYOUT_CAPTIONS, root, train_images + val_images, "image", progress) as bar:
            for split, count in (("train", train_images), ("val", val_images)):
                source = load_fashion_mnist(SPLITS[split], fashion_mnist_root, download=download)
                files.update(write_split(folder, split, count, settings, source, bar))
        return {"format": FORMAT, "settings": settings.to_json(), "software": software_versions(), "files": files}

    return write_staged(root, write_contents)
