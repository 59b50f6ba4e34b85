"""COCO caption metrics (CIDEr-D, BLEU-1..4, ROUGE-L) through pycocoevalcap, with a Java-free tokenizer.

The scores are pycocoevalcap's own scorers (`Cider` is CIDEr-D: clipped tf-idf n-gram counts and a
gaussian length penalty; `Bleu(4)` with the "closest" reference length; `Rouge` with beta 1.2), so
numbers are comparable with published COCO results as long as the captions are tokenized the same
way. coco-caption tokenizes with Stanford's PTBTokenizer, which runs on Java; when Java is missing,
`simple_tokenize` imitates it for plain English captions (see its docstring for where they differ)
and the result says which tokenizer was used, so a report can print it.

CIDEr's idf comes from the references of the images being scored: the same caption for the same
image gets a different CIDEr when it is scored with a different set of images, and a single image
always scores 0 (every n-gram's idf is log(1 / 1)). Compare CIDEr only between runs scored on the
same split.

Needs the `caption` extra (`pip install 'lookupvit[caption]'`) for the scorers; the PTB tokenizer
also needs a Java runtime (Debian: `apt-get install default-jre-headless`).
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

from ..data.text import simple_tokenize

TOKENIZERS = ("auto", "ptb", "simple")

@dataclass(frozen=True)
class CaptionScores:
    """Corpus-level caption metrics of one evaluated set, on coco-caption's scales (CIDEr-D x 10, the rest in [0, 1])."""

    cider: float
    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    rouge_l: float
    tokenizer: str  # "ptb" or "simple": which tokenizer produced the tokens that were scored
    num_images: int

    def as_dict(self) -> dict[str, float | str | int]:
        return asdict(self)


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """Tokenize captions with pycocoevalcap's PTBTokenizer (Stanford CoreNLP on Java), coco-caption's reference tokenizer.

    The captions go to Java as lines of one file, so every kind of line break inside a caption is turned
    into a space first: an unnormalised one would shift every later caption onto the wrong image.
    """
    _require_java()
    _require_pycocoevalcap()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    lines = {index: [{"caption": " ".join(caption.split())}] for index, caption in enumerate(captions)}
    tokenized = PTBTokenizer().tokenize(lines)
    if len(tokenized) != len(lines) or any(len(tokens) != 1 for tokens in tokenized.values()):
        raise RuntimeError(f"PTBTokenizer returned {len(tokenized)} captions for {len(lines)}")
    return [tokenized[index][0] for index in range(len(captions))]


def caption_scores(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    tokenizer: str = "auto",
) -> CaptionScores:
    """CIDEr-D, BLEU-1..4 and ROUGE-L of one candidate caption per image against that image's references.

    references maps an image key to its reference captions, candidates the same keys to one caption
    each; only the images in `candidates` are scored (references of other images are ignored, so a
    whole split's references can be passed with a subset of predictions). tokenizer: "ptb" (coco-caption's
    own, needs Java), "simple" (`simple_tokenize`, no Java) or "auto" (ptb when `java` is on the PATH).

    CIDEr's idf is computed from the references of the scored images, so the score of a caption depends
    on which images are scored together; compare CIDEr only between runs on the same image set.
    An empty candidate is allowed and scores 0 for its image.
    """
    keys = _check_inputs(references, candidates)
    used = _resolve_tokenizer(tokenizer)
    ref_lists = [list(references[key]) for key in keys]
    flat = [caption for refs in ref_lists for caption in refs] + [candidates[key] for key in keys]
    tokens = ptb_tokenize(flat) if used == "ptb" else [simple_tokenize(caption) for caption in flat]
    gts: dict[int, list[str]] = {}
    position = 0
    for index, (key, refs) in enumerate(zip(keys, ref_lists)):
        gts[index] = tokens[position : position + len(refs)]
        position += len(refs)
        # An empty reference would give an empty candidate ROUGE-L 1 and, when all are empty, break CIDEr's idf.
        for ref_number, ref in enumerate(gts[index]):
            if not ref:
                raise ValueError(
                    f"reference {ref_number} of image {key!r} is empty after tokenization ({ref_lists[index][ref_number]!r})"
                )
    res = {index: [tokens[position + index]] for index in range(len(keys))}
    return _score(gts, res, used)


def _score(gts: dict[int, list[str]], res: dict[int, list[str]], tokenizer: str) -> CaptionScores:
    """Run pycocoevalcap's three scorers on tokenized captions (space-joined tokens, one candidate per image)."""
    _require_pycocoevalcap()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge_l = _rouge_l(gts, res)
    return CaptionScores(
        cider=float(cider),
        bleu1=float(bleu[0]),
        bleu2=float(bleu[1]),
        bleu3=float(bleu[2]),
        bleu4=float(bleu[3]),
        rouge_l=rouge_l,
        tokenizer=tokenizer,
        num_images=len(res),
    )


def _rouge_l(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """pycocoevalcap's ROUGE-L averaged over images, with an empty candidate scored 0 explicitly.

    pycocoevalcap splits on a single space, so an empty candidate becomes one empty token instead of
    none; that token happens to match nothing in non-empty references, which is not worth relying on.
    """
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    scores = [0.0 if not res[index][0] else float(scorer.calc_score(res[index], gts[index])) for index in gts]
    return sum(scores) / len(scores)


def _resolve_tokenizer(tokenizer: str) -> str:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if tokenizer == "auto":
        return "ptb" if shutil.which("java") else "simple"
    if tokenizer == "ptb":
        _require_java()
    return tokenizer


def _require_pycocoevalcap() -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as error:
        raise ImportError("caption metrics need pycocoevalcap: pip install 'lookupvit[caption]'") from error


def _require_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(
            "tokenizer='ptb' runs Stanford's PTBTokenizer on Java, and no `java` is on the PATH: install a Java "
            "runtime (Debian/Ubuntu: apt-get install default-jre-headless), or pass tokenizer='simple' for the "
            "Java-free imitation"
        )


def _check_inputs(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]) -> list[Hashable]:
    """Reject inputs that pycocoevalcap would fail on with a bare assert, or score silently wrong."""
    if not isinstance(references, Mapping) or not isinstance(candidates, Mapping):
        raise TypeError(
            "references and candidates must be mappings from image key to captions, got "
            f"{type(references).__name__} and {type(candidates).__name__}"
        )
    if not candidates:
        raise ValueError("no candidate captions to score")
    keys = list(candidates)
    missing = [key for key in keys if key not in references]
    if missing:
        shown = ", ".join(repr(key) for key in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} of {len(keys)} candidate images have no references: {shown}")
    for key in keys:
        if not isinstance(candidates[key], str):
            raise TypeError(f"the candidate for image {key!r} must be a str, got {type(candidates[key]).__name__}")
        refs = references[key]
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"the references for image {key!r} must be a list of str, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"image {key!r} has no reference captions")
        for ref in refs:
            if not isinstance(ref, str):
                raise TypeError(f"the references for image {key!r} must be str, got a {type(ref).__name__}")
    return keys
