"""Tar shards in the WebDataset layout: writing them from an ImageNet-style tree, reading them by index.

Layout of a shard folder (what `write_shards` writes and `open_shards` reads):

    OUT/classes.txt          one class name per line; line i names label i (optional for reading)
    OUT/train-000000.tar     samples of the training split, in a seeded random order
    OUT/train-000001.tar     ...
    OUT/val-000000.tar       samples of the validation split

Each sample is a run of consecutive tar members sharing a key (the member name up to the first
dot of its base name): one media member, `<key>.jpg` (or .jpeg, .png, .webp, .gif, ...) for an image
or `<key>.mp4` (or .avi, .mkv, .webm, .mov) for a video, holding the file's original encoded bytes,
and `<key>.cls` holding its class index as ASCII text. Other members of a sample (.json, .txt, ...)
are ignored. This is the layout of https://github.com/webdataset/webdataset, but read here with
Python's tarfile only. A shard folder holds images or videos, never both: `ShardSource` decodes
images for the image models, `VideoShardSource` samples clips (data/video.ClipSampler) for the
video models, and each refuses a sample of the other kind.

Why random access rather than streaming the tars in order: the training order (data/loader.py)
is a seeded permutation of the whole training set, and step s of a run reads rows s*B.. of it,
split among K ranks x W DataLoader workers. Reading sample i wherever it lies in whichever shard
gives exactly the batches of one process, and lets a resumed run start at its step without
re-reading the epoch. So `ShardSource` scans the tar headers once at open, keeps (shard, byte
offset, size) of every media member, and `read(i)` seeks there. The shards are uncompressed tars
(seeking needs that); the images and videos inside are already compressed.

The writer shuffles each split before cutting it into shards, so any one shard mixes classes
(streaming readers that read shard by shard rely on that; it costs this reader nothing).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import shlex
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..files import atomic_write
from .folders import IMAGE_SUFFIXES
from .sources import ImageTreeSource, decode_image, open_image_tree
from .video import VIDEO_SUFFIXES, ClipReading, VideoFolderSource, VideoReader, open_video_tree

# Media members the reader recognises: the image folders' suffixes, all of which Pillow decodes, and the
# video trees' suffixes, which PyAV decodes. ShardIndex.extension indexes MEDIA_EXTENSIONS; the images come
# first so that an index saved before videos were recognised still names the same extensions.
IMAGE_EXTENSIONS = tuple(sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES))
VIDEO_EXTENSIONS = tuple(sorted(suffix.lstrip(".") for suffix in VIDEO_SUFFIXES))
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
LABEL_EXTENSION = "cls"
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "val")
# Open shard files one process keeps at most: W workers x thousands of shards would exceed the
# usual limit of 1024 open files, and reopening a shard costs little next to decoding a JPEG.
OPEN_SHARDS = 64
# A tar archive ends with two zero blocks; a file cut anywhere before them lacks them.
END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def write_again_hint(root: Path) -> str:
    return f"write them with `lookupvit shards TREE {shlex.quote(str(root))}`"


# ---------------------------------------------------------------------------------------------
# Writing


def write_shards(
    root: str | os.PathLike, out: str | os.PathLike, images_per_shard: int = 1000, seed: int = 0, progress: bool = True
) -> dict:
    """Write the train and val splits of the tree `root`, of images or of videos, as shards in `out` (a new or empty folder).

    `images_per_shard` counts samples, videos too. Refuses a tree of both kinds (see tree_media)
    and a non-empty `out`: an earlier or interrupted run's shards could otherwise mix with these
    under the same names. Each shard is written to a temporary name and renamed when complete,
    and classes.txt is written last, so a folder without classes.txt is an unfinished run.
    Returns {"classes": n, "train": {"images": n, "shards": k}, "val": {...}}, with "videos" for "images" from a video tree.
    """
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be a positive whole number, got {images_per_shard}")
    media = tree_media(Path(root))
    # The writer copies each file's encoded bytes and decodes nothing, so a video tree's clip length does not matter here.
    train, val = open_video_tree(root, num_frames=1) if media == "video" else open_image_tree(root)
    out = Path(out)
    refuse_non_empty(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"classes": len(train.classes)}
    with tqdm(total=len(train) + len(val), desc="shards", unit=media, disable=not progress) as bar:
        for split, source in zip(SPLITS, (train, val)):
            order = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(source))
            summary[split] = {f"{media}s": len(source), "shards": write_split(source, split, order, out, images_per_shard, bar)}
            ShardIndex.scan(sorted(out.glob(f"{split}-*.tar"))).save(out / index_name(split))
    atomic_write(out / CLASSES_FILE, lambda tmp: Path(tmp).write_text("".join(f"{name}\n" for name in train.classes)))
    return summary


def tree_media(root: Path) -> str:
    """What the class folders of root/train and root/val hold (listed as list_class_tree lists them): "image" or "video".

    A tree of both is refused: a shard folder is read whole by an image model or by a video model.
    A tree of neither reads as images, so that the image tree's listing says what is missing.
    """
    examples: dict[str, Path] = {}
    for split in SPLITS:
        split_dir = root / split
        class_dirs = [d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")] if split_dir.is_dir() else []
        for path in (path for class_dir in class_dirs for path in class_dir.rglob("*")):
            suffix = path.suffix.lower()
            kind = "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None
            if kind is not None:
                examples.setdefault(kind, path)
            if len(examples) == 2:
                raise ValueError(
                    f"{root} holds images (e.g. {examples['image']}) and videos (e.g. {examples['video']}); a shard folder "
                    "holds one kind, for an image model or for a video model: move the videos (or the images) into a tree "
                    "of their own and write each as shards"
                )
    return "video" if "video" in examples else "image"


def write_split(
    source: ImageTreeSource | VideoFolderSource, split: str, order: np.ndarray, out: Path, images_per_shard: int, bar
) -> int:
    """Write the samples of `source` in `order` as out/<split>-000000.tar, ...; return how many shards."""
    starts = range(0, len(order), images_per_shard)
    for number, first in enumerate(starts):
        chunk = order[first : first + images_per_shard]
        atomic_write(
            out / shard_name(split, number),
            functools.partial(write_shard, source=source, split=split, first=first, indices=chunk),
        )
        bar.update(len(chunk))
    return len(starts)


def refuse_non_empty(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a new or empty folder for the shards")
    if out.is_dir():
        entries = sorted(entry.name for entry in out.iterdir())
        if entries:
            raise ValueError(
                f"{out} is not empty ({len(entries)} entries, e.g. {entries[0]}); shards are written only into a new or empty "
                "folder, so that an earlier or interrupted run's shards cannot mix with these: remove it or choose another folder"
            )


def write_shard(path: str, source: ImageTreeSource | VideoFolderSource, split: str, first: int, indices: np.ndarray) -> None:
    """One tar of samples `<split><position>.<ext>` + `.cls`, positions first, first+1, ... in the split's order."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for position, index in enumerate(indices.tolist(), start=first):
            file_path = source.root / source.split / source.paths[index].decode()
            key = f"{split}{position:08d}"
            extension = file_path.suffix.lower().lstrip(".")
            add_member(tar, f"{key}.{extension}", file_path.read_bytes())
            add_member(tar, f"{key}.{LABEL_EXTENSION}", str(int(source.labels[index])).encode())


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed times and owners: the same tree and seed give byte-identical shards.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class ShardIndex:
    """Where every sample of one split lies, one entry per sample in numpy arrays (shared by forked workers)."""

    shard_names: list[str]
    shard_sizes: list[int]
    shard: np.ndarray  # int32: which shard (index into shard_names)
    offset: np.ndarray  # int64: byte offset of the media (image or video) member's data in its shard
    size: np.ndarray  # int64: its length in bytes
    extension: np.ndarray  # uint8: index into MEDIA_EXTENSIONS
    key: np.ndarray  # bytes, one fixed-width buffer
    label: np.ndarray  # int64

    @classmethod
    def scan(cls, paths: list[Path]) -> ShardIndex:
        """Read the headers of every shard, one after the other.

        Each shard's samples become arrays at once, so opening a million samples never holds a
        million Python objects (which the allocator may keep after they are freed).
        """
        columns: list[tuple] = []
        for number, path in enumerate(paths):
            samples = scan_shard(path)  # (key, offset, size, extension, label) per sample
            keys, offsets, sizes, extensions, labels = zip(*samples) if samples else ((),) * 5
            columns.append(
                (
                    np.full(len(samples), number, dtype=np.int32),
                    np.array(offsets, dtype=np.int64),
                    np.array(sizes, dtype=np.int64),
                    np.array(extensions, dtype=np.uint8),
                    np.array(keys, dtype=np.bytes_),
                    np.array(labels, dtype=np.int64),
                )
            )
        shard, offset, size, extension, key, label = (np.concatenate(column) for column in zip(*columns))
        return cls(
            [path.name for path in paths], [path.stat().st_size for path in paths], shard, offset, size, extension, key, label
        )

    def save(self, path: Path) -> None:
        """The index beside the shards, so that opening them need not read every tar header again."""
        arrays = {name: getattr(self, name) for name in ("shard", "offset", "size", "extension", "key", "label")}
        names = np.array(self.shard_names, dtype=np.bytes_)
        sizes = np.array(shard_stamps([path.parent / name for name in self.shard_names]), dtype=np.int64)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, shard_names=names, shard_sizes=sizes, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path, paths: list[Path]) -> ShardIndex | None:
        """The saved index if it describes exactly these shard files (names, sizes, modification times), else None."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                names = [name.decode() for name in saved["shard_names"]]
                if names != [p.name for p in paths] or saved["shard_sizes"].tolist() != shard_stamps(paths):
                    return None
                sizes = [p.stat().st_size for p in paths]
                return cls(names, sizes, *(saved[name] for name in ("shard", "offset", "size", "extension", "key", "label")))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # missing, damaged or from another layout: scanning the headers is always right

    @classmethod
    def open(cls, root: Path, split: str, paths: list[Path]) -> ShardIndex:
        return cls.load(root / index_name(split), paths) or cls.scan(paths)


def index_name(split: str) -> str:
    return f"{split}.index.npz"


def shard_stamps(paths: list[Path]) -> list[list[int]]:
    """(size, modification time) per shard: a shard written again, even at the same size, gets a new time."""
    return [[stat.st_size, stat.st_mtime_ns] for stat in (path.stat() for path in paths)]


class ShardSamples:
    """The samples of root/<split>-*.tar (sorted by name) by index: class names, labels and each sample's encoded bytes.

    The base of ShardSource (images) and VideoShardSource (clips), which decode what `read_bytes`
    returns; `media` names the kind a subclass decodes, and a shard of the other kind is refused at open.
    """

    streamed = True
    media = "image"

    def __init__(self, root: str | os.PathLike, split: str, classes: tuple[str, ...] | None = None):
        self.root, self.split = Path(root), split
        paths = sorted(self.root.glob(f"{split}-*.tar"))
        if not paths:
            raise FileNotFoundError(f"no {split}-*.tar shards in {self.root}; {write_again_hint(self.root)}")
        self.index = ShardIndex.open(self.root, split, paths)
        if len(self.index.label) == 0:
            raise ValueError(
                f"the {split} shards in {self.root} ({paths[0].name} ...) hold no samples; {write_again_hint(self.root)}"
            )
        check_media(self.index, self.media, self.root, split, type(self).__name__)
        if classes is None:
            classes = read_classes(self.root)
        if classes is None:
            classes = tuple(str(label) for label in range(int(self.index.label.max()) + 1))
        check_labels(self.index, classes, self.root)
        self.classes = tuple(classes)
        self.labels = torch.from_numpy(self.index.label)
        self._files: collections.OrderedDict = collections.OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index.label)

    def read_bytes(self, index: int) -> bytes:
        """The encoded image or video of sample `index`, as it was written."""
        shard = int(self.index.shard[index])
        handle = self._open(shard)
        handle.seek(int(self.index.offset[index]))
        size = int(self.index.size[index])
        data = handle.read(size)
        while len(data) < size:  # a raw read may return fewer bytes than asked (network file systems)
            more = handle.read(size - len(data))
            if not more:
                break  # the file shrank since it was scanned: decoding reports it as corrupt
            data += more
        return data

    def where(self, index: int) -> str:
        """Sample `index` as error messages name it: its member and shard."""
        member = f"{self.index.key[index].decode()}.{MEDIA_EXTENSIONS[self.index.extension[index]]}"
        return f"sample {member} of shard {self._path(int(self.index.shard[index]))}"

    def _path(self, shard: int) -> Path:
        return self.root / self.index.shard_names[shard]

    def _open(self, shard: int):
        """This process's open file of a shard. A forked worker opens its own: an inherited file
        would share its read position with the parent and the other workers."""
        if self._pid != os.getpid():
            self._files, self._pid = collections.OrderedDict(), os.getpid()
        if shard in self._files:
            self._files.move_to_end(shard)
        else:
            if len(self._files) >= OPEN_SHARDS:
                self._files.popitem(last=False)[1].close()
            self._files[shard] = open(self._path(shard), "rb", buffering=0)  # noqa: SIM115 (kept open across reads)
        return self._files[shard]

    def __getstate__(self) -> dict:
        # Spawned workers get a pickled copy: open files do not pickle, and each process opens its own.
        return {**self.__dict__, "_files": collections.OrderedDict()}

    def fingerprint(self) -> dict:
        """Class names, size and a hash of shard names and sizes and every sample's place and label (nothing is decoded)."""
        digest = hashlib.sha256()
        for name, size in zip(self.index.shard_names, self.index.shard_sizes):
            digest.update(f"{name}\0{size}\n".encode())
        for array in (self.index.shard, self.index.offset, self.index.size, self.index.label):
            digest.update(array.tobytes())
        return {"classes": list(self.classes), "images": len(self), "sha256": digest.hexdigest()}


class ShardSource(ShardSamples):
    """Image shards read by index, decoded to uint8 (channels, H, W); the interface of ImageTreeSource."""

    media = "image"

    def __init__(self, root: str | os.PathLike, split: str, classes: tuple[str, ...] | None = None, channels: int = 3):
        super().__init__(root, split, classes)
        self.channels = channels

    def read(self, index: int) -> Tensor:
        return decode_image(self.read_bytes(index), self.channels, self.where(index))


class VideoShardSource(ClipReading, ShardSamples):
    """Video shards read by index as uint8 clips, sampled as VideoFolderSource samples them (data/video.ClipSampler)."""

    media = "video"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        num_frames: int,
        stride: int = 1,
        channels: int = 3,
        training: bool = True,
        reader: VideoReader | None = None,
        temporal_views: int | None = None,
        classes: tuple[str, ...] | None = None,
    ):
        self.init_clip_reading(num_frames, stride, channels, training, reader, temporal_views)
        super().__init__(root, split, classes)

    def read(self, index: int) -> Tensor:
        return self.clip(self.read_bytes(index), self.where(index))

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "clips": self.sampler.settings()}


def open_shards(root: str | os.PathLike, channels: int = 3) -> tuple[ShardSource, ShardSource]:
    """The train and val splits of a folder of image shards; their class lists must be identical."""
    return open_shard_splits(Path(root), lambda split: ShardSource(root, split, channels=channels))


def open_video_shards(
    root: str | os.PathLike, num_frames: int, stride: int = 1, channels: int = 3, temporal_views: int | None = None
) -> tuple[VideoShardSource, VideoShardSource]:
    """The video shards' train split with training sampling and val split with evaluation sampling, as open_video_tree."""

    def open_split(split: str) -> VideoShardSource:
        training = split == "train"
        views = None if training else temporal_views
        return VideoShardSource(root, split, num_frames, stride, channels, training=training, temporal_views=views)

    return open_shard_splits(Path(root), open_split)


def open_shard_splits(root: Path, open_split) -> tuple:
    """open_split("train") and open_split("val") of a shard folder; their class lists must be identical."""
    if not root.is_dir():
        raise FileNotFoundError(f"shard folder {root} does not exist; {write_again_hint(root)}")
    missing = [split for split in SPLITS if not any(root.glob(f"{split}-*.tar"))]
    if missing:
        raise FileNotFoundError(
            f"no {' and no '.join(f'{split}-*.tar' for split in missing)} shards in {root}; {write_again_hint(root)}"
        )
    train, val = open_split("train"), open_split("val")
    if train.classes != val.classes:
        raise ValueError(
            f"the train shards in {root} have labels 0..{len(train.classes) - 1} but the val shards 0..{len(val.classes) - 1}; "
            f"without {root / CLASSES_FILE} the class list is read from the labels, so both splits need the same highest label: "
            f"add {CLASSES_FILE} (one class name per line, line i naming label i) or write the shards again"
        )
    return train, val


# What to do with shards of the other kind, by the kind the reader wanted.
OTHER_MEDIA_FIX = {
    "image": "these are video shards: train a video model (lookupvivit_*, vivit_*) on them, or write image shards from an "
    "image tree (root/train/<class>/<image>) with `lookupvit shards TREE OUT`",
    "video": "these are image shards: train an image model (lookupvit_*, vit_*, ...) on them, or write video shards from a "
    "video tree (root/train/<class>/<video>) with `lookupvit shards TREE OUT`",
}


def check_media(index: ShardIndex, media: str, root: Path, split: str, reader: str) -> None:
    """Refuse samples that are not `media` ("image" or "video"): a decoder of the other kind would call them all corrupt."""
    is_video = index.extension >= len(IMAGE_EXTENSIONS)
    wrong = np.flatnonzero(is_video != (media == "video"))
    if len(wrong) == 0:
        return
    first, other = wrong[0], "video" if media == "image" else "image"
    member = f"{index.key[first].decode()}.{MEDIA_EXTENSIONS[index.extension[first]]}"
    if len(wrong) < len(index.label):
        fix = (
            f"the {split} shards mix images and videos ({len(wrong)} of {len(index.label)} samples are {other}s); "
            f"write them again from a tree of {media}s only"
        )
    else:
        fix = OTHER_MEDIA_FIX[media]
    article = "an" if other == "image" else "a"
    raise ValueError(
        f"sample {member} of shard {root / index.shard_names[index.shard[first]]} is {article} {other}, "
        f"but {reader} reads {media}s; {fix}"
    )


def read_classes(root: Path) -> tuple[str, ...] | None:
    """The class names of root/classes.txt, line i naming label i; None without the file."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = path.read_text(encoding="utf-8").splitlines()
    while names and not names[-1].strip():
        names.pop()  # blank lines at the end, as editors leave them
    if not names:
        raise ValueError(
            f"{path} is empty; it should name one class per line (line i naming label i), or remove it to name classes 0, 1, ..."
        )
    for line, name in enumerate(names, start=1):
        if not name.strip():
            raise ValueError(f"line {line} of {path} is blank; it should name one class per line (line i naming label i)")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path} names {duplicates[:5]} more than once; each line should name a different class")
    return tuple(names)


def check_labels(index: ShardIndex, classes: tuple[str, ...], root: Path) -> None:
    outside = np.flatnonzero((index.label < 0) | (index.label >= len(classes)))
    if len(outside):
        first = outside[0]
        classes_from = root / CLASSES_FILE if (root / CLASSES_FILE).is_file() else "the class list"
        raise ValueError(
            f"sample {index.key[first].decode()} of shard {root / index.shard_names[index.shard[first]]} has class {index.label[first]}, "
            f"but {classes_from} names {len(classes)} classes (0..{len(classes) - 1}); {len(outside)} sample(s) are outside it. "
            f"Write the shards again, or fix {CLASSES_FILE}"
        )


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/n0001.seg.png' -> ('dir/n0001', 'seg.png'): WebDataset's key is the name up to the base name's first dot."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def truncated(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"shard {path} is truncated or not an uncompressed tar archive ({reason}); write it again with `lookupvit shards TREE {shlex.quote(str(path.parent))}`"
    )


def scan_shard(path: Path) -> list[tuple[bytes, int, int, int, int]]:
    """(key, media offset, media size, extension index, label) per sample of a shard, from its tar headers and .cls members."""
    file_size = path.stat().st_size
    samples: list[tuple[bytes, int, int, int, int]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            sample = SampleMembers(path, key=None)
            while (member := tar.next()) is not None:
                tar.members = []  # tarfile keeps every header it read; a million of them are not needed
                if not member.isfile():
                    continue
                if member.offset_data + member.size > file_size:
                    raise truncated(path, f"member {member.name} runs past the end of the file at byte {file_size}")
                key, extension = split_member_name(member.name)
                if key != sample.key:
                    sample.add_to(samples)
                    sample = SampleMembers(path, key)
                sample.add_member(tar, member, extension)
            sample.add_to(samples)
            end = tar.offset  # where the end-of-archive marker should start
    except tarfile.TarError as error:
        raise truncated(path, str(error) or type(error).__name__) from None
    # tarfile stops quietly at a header cut short or at the end of the file, so a file cut
    # between two members reads as a shorter archive: only the missing end marker shows it.
    with open(path, "rb") as handle:
        handle.seek(end)
        if handle.read(len(END_OF_ARCHIVE)) != END_OF_ARCHIVE:
            raise truncated(path, f"no end-of-archive marker after the last complete member, at byte {end} of {file_size}")
    return samples


class SampleMembers:
    """The members of one sample met so far while scanning: its image's or video's place and its label."""

    def __init__(self, path: Path, key: str | None):
        self.path, self.key = path, key
        self.media: tuple[int, int, int, str] | None = None  # offset, size, extension index, member name
        self.label: int | None = None
        self.extensions: list[str] = []

    def add_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, extension: str) -> None:
        self.extensions.append(extension)
        if extension in MEDIA_EXTENSIONS:
            if self.media is not None:
                raise ValueError(
                    f"sample {self.key} of shard {self.path} has two images or videos ({self.media[3]} and {member.name}); "
                    "each sample holds one"
                )
            self.media = (member.offset_data, member.size, MEDIA_EXTENSIONS.index(extension), member.name)
        elif extension == LABEL_EXTENSION:
            if self.label is not None:
                raise ValueError(
                    f"sample {self.key} of shard {self.path} has two .cls members; each sample holds one class index"
                )
            self.label = parse_label(tar.extractfile(member).read(), self.key, self.path)

    def add_to(self, samples: list) -> None:
        if self.key is None:  # before the first member
            return
        if self.media is None:
            raise ValueError(
                f"sample {self.key} of shard {self.path} has no image member (members: {', '.join('.' + e for e in self.extensions)}; "
                f"expected one of {', '.join('.' + e for e in IMAGE_EXTENSIONS)}, or in video shards one of "
                f"{', '.join('.' + e for e in VIDEO_EXTENSIONS)}); write the shard again"
            )
        if self.label is None:
            raise ValueError(
                f"sample {self.key} of shard {self.path} has no .cls member (its class index as text); write the shard again"
            )
        offset, size, extension, _ = self.media
        samples.append((self.key.encode(), offset, size, extension, self.label))


def parse_label(data: bytes, key: str, path: Path) -> int:
    # Digits only: int() alone would also take "1_0" or "+3", which no writer means as a class index.
    text = data.decode("ascii", errors="replace").strip()
    if text.removeprefix("-").isdigit():
        return int(text)
    raise ValueError(
        f"the .cls member of sample {key} in shard {path} holds {data[:40]!r}, not a class index (a whole number as text); write the shard again"
    )
