"""A word-level caption tokenizer the project owns, so a captioner needs no external vocabulary.

Words are the tokens caption metrics score: `simple_tokenize` imitates coco-caption's PTB tokenizer
and punctuation filter (lowercased, punctuation removed, clitics split off: "A dog's ball!" becomes
["a", "dog", "'s", "ball"]), so what the decoder generates is scored word for word as it was trained.
evaluation.captions uses the same function when Java (for the real PTB tokenizer) is missing.

Ids: the four specials come first, `<pad>` = 0 (what padded batches hold and the loss ignores),
then `<bos>` = 1, `<eos>` = 2, `<unk>` = 3; the words follow, most frequent first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIALS))

FORMAT = "lookupvit.WordTokenizer"  # marks the dict to_dict writes, so from_dict can refuse anything else


# PTBTokenizer turns brackets into these tokens, and coco-caption's punctuation filter (which lists
# them upper-case) misses them after `-lowerCase`, so they stay in the tokenized captions.
_BRACKET_TOKENS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Words PTBTokenizer splits in two.
_SPLIT_WORDS = {
    "cannot": "can not",
    "gonna": "gon na",
    "wanna": "wan na",
    "gotta": "got ta",
    "lemme": "lem me",
    "gimme": "gim me",
}
# Typographic quotes and dashes, as PTBTokenizer normalises them before filtering.
_CHARACTER_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": " -- ", "\u2014": " -- "})
# PTBTokenizer splits these symbols off as tokens of their own; coco-caption keeps them.
_SYMBOLS = re.compile(r"([&*#$%=^|\\~+])")
_SPLIT_WORD = re.compile(r"\b(" + "|".join(_SPLIT_WORDS) + r")\b")
# Clitics become tokens of their own ("dog's" -> "dog 's", "don't" -> "do n't") and survive the filter.
_CLITICS = ("'s", "'re", "'ve", "'ll", "'d", "'m", "n't")
_CLITIC = re.compile(r"(?<=[^\W_])(n't|'s|'re|'ve|'ll|'d|'m)(?![^\W_])")
# Tokens PTBTokenizer reads as abbreviations keep their final period: letters each followed by a period
# ("u.s.", "p.m.", "a.") and a list of words it knows (a common subset of PTB's own list).
_ABBREVIATION = re.compile(
    r"(?:[^\W\d_]\.)+"
    r"|(?:mr|mrs|ms|dr|st|jr|sr|prof|gen|col|lt|sgt|capt|sen|rep|gov|rev|hon|mt|ft|rd|ave|blvd|vs|etc|inc|co|corp|ltd"
    r"|dept|univ|est|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|wed|thu|fri)\."
)
# Runs of ! and ? ("?!", "!!") are one token that coco-caption's filter does not list.
_BANG_RUN = re.compile(r"([!?]{2,})")
_KEPT_TOKENS = frozenset(_BRACKET_TOKENS.values()) | frozenset(_CLITICS)
# Punctuation coco-caption removes, except where PTB keeps it inside a word or number: a period between
# letters or digits ("3.5", "u.s"), a comma or colon between digits ("1,000", "5:30"), one hyphen
# between letters or digits ("black-and-white"), an apostrophe between letters ("o'clock").
# ([^\W_] is a letter or digit, [^\W\d_] a letter.)
_REMOVED_PUNCTUATION = re.compile(
    r"""
      (?<![^\W_])\. | \.(?![^\W_])
    | (?<!\d),      | ,(?!\d)
    | (?<!\d):      | :(?!\d)
    | (?<![^\W_])-  | -(?![^\W_])
    | (?<![^\W\d_])'| '(?![^\W\d_])
    | [;!?"`]
    """,
    re.VERBOSE,
)



def simple_tokenize(caption: str) -> str:
    """Tokenize one caption like coco-caption's PTBTokenizer + punctuation filter does, without Java.

    Lowercases; splits off clitics ('s 're 've 'll 'd 'm n't) and PTB's split words (cannot -> can not);
    turns brackets into -lrb-/-rrb-/... tokens (PTB does, and coco-caption's filter misses them in
    lower case); splits off the symbols & * # $ % = ^ | \\ ~ +; removes the punctuation coco-caption
    removes (. , : ; ! ? quotes, hyphens, apostrophes) except inside words and numbers as PTB keeps it,
    and keeps the final period of abbreviations ("u.s.", "mr."); returns the tokens joined by single spaces.

    Known differences from PTB, all rare in captions: PTB knows more abbreviations than the common ones
    listed here, and keeps their period also when other punctuation follows ("etc.,"), here it is
    dropped; PTB keeps "?" inside a word ("what?no"), here it separates; PTB splits a few apostrophe
    forms otherwise ("y'all" -> "y' all", "'tis" -> "'t is", "rock'n'roll" -> "rock 'n' roll", "'90s"
    keeps its apostrophe); runs of dots between words ("a...b") and underscores differ. Text in other
    languages than English is not imitated.
    """
    if not isinstance(caption, str):
        raise TypeError(f"a caption must be a str, got {type(caption).__name__}")
    text = caption.lower().translate(_CHARACTER_MAP)
    for bracket, token in _BRACKET_TOKENS.items():
        text = text.replace(bracket, f" {token} ")
    text = _SPLIT_WORD.sub(lambda match: _SPLIT_WORDS[match.group(1)], text)
    text = _SYMBOLS.sub(r" \1 ", text)
    text = _CLITIC.sub(r" \1 ", text)
    text = _BANG_RUN.sub(r" \1 ", text)
    tokens: list[str] = []
    for token in text.split():
        if token in _KEPT_TOKENS or _BANG_RUN.fullmatch(token) or _ABBREVIATION.fullmatch(token):
            tokens.append(token)
        else:
            tokens.extend(_REMOVED_PUNCTUATION.sub(" ", token).split())
    return " ".join(tokens)



def split_words(text: str) -> list[str]:
    """The words of `text` as caption metrics tokenize them (see the module docstring)."""
    return simple_tokenize(text).split()


class WordTokenizer:
    """Words <-> ids. Build one with `WordTokenizer.fit(captions)`; `len()` is the decoder's vocab_size."""

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary lists a word twice")
        clash = sorted(set(words) & set(SPECIALS))
        if clash:
            raise ValueError(f"the vocabulary must not list the special tokens {clash}; they are added in front")
        self.itos = list(SPECIALS) + words
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def fit(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> WordTokenizer:
        """The words occurring at least `min_count` times, most frequent first (ties alphabetically).

        `max_size` caps len(tokenizer), the four specials included; rarer words then become <unk>.
        """
        if isinstance(captions, str):
            raise TypeError("fit takes a collection of captions, not one str (which would be read as single characters)")
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
            raise ValueError(f"min_count must be a whole number, at least 1, got {min_count!r}")
        if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool) or max_size <= len(SPECIALS)):
            raise ValueError(f"max_size must be None or a whole number above {len(SPECIALS)} (the specials), got {max_size!r}")
        counts: Counter[str] = Counter()
        num_captions = 0
        for caption in captions:
            counts.update(split_words(caption))
            num_captions += 1
        if num_captions == 0:
            raise ValueError("cannot fit a tokenizer on no captions")
        words = sorted((word for word, count in counts.items() if count >= min_count), key=lambda word: (-counts[word], word))
        if not words:
            raise ValueError(f"no word occurs at least min_count={min_count} times in the {num_captions} captions")
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_length: int) -> list[int]:
        """[bos, word ids..., eos], at most `max_length` ids: a longer caption loses its last words, never its eos."""
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be a whole number, at least 2 (bos and eos), got {max_length!r}")
        word_ids = [self.stoi.get(word, UNK_ID) for word in split_words(text)]
        return [BOS_ID] + word_ids[: max_length - 2] + [EOS_ID]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> Tensor:
        """(B, L) int64 ids, each row encode()'s, padded with <pad> to the longest row."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of captions, not one str")
        rows = [self.encode(text, max_length) for text in texts]
        if not rows:
            raise ValueError("encode_batch got no captions")
        batch = torch.full((len(rows), max(len(row) for row in rows)), PAD_ID, dtype=torch.long)
        for index, row in enumerate(rows):
            batch[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        return batch

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The words of `ids` joined by spaces, up to the first eos; specials (<unk> too) are left out."""
        if isinstance(ids, Tensor):
            if ids.ndim != 1:
                raise ValueError(f"decode takes one sequence of ids (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        words = []
        for index in ids:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.itos):
                raise ValueError(f"id {index!r} is not in the vocabulary of {len(self.itos)} tokens (0..{len(self.itos) - 1})")
            if index == EOS_ID:
                break
            if index >= len(SPECIALS):
                words.append(self.itos[index])
        return " ".join(words)

    def to_dict(self) -> dict:
        """A JSON-ready description; `from_dict` rebuilds an equal tokenizer from it."""
        return {"format": FORMAT, "specials": list(SPECIALS), "words": self.itos[len(SPECIALS) :]}

    @classmethod
    def from_dict(cls, data: dict) -> WordTokenizer:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a saved WordTokenizer (expected a dict with format {FORMAT!r})")
        if data.get("specials") != list(SPECIALS):
            raise ValueError(f"saved specials {data.get('specials')!r} differ from this version's {list(SPECIALS)}")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise ValueError("a saved WordTokenizer's 'words' must be a list of str")
        return cls(words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"WordTokenizer({len(self)} tokens)"
