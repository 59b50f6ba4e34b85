"""Captioning on frozen image tokens (paper Sec. 4, Table 3).

A trained LookupViT is frozen and a randomly initialised text decoder learns to caption from its M
compressed tokens only (the baseline: the same decoder on all N patch tokens of a ViT). The decoder
follows big_vision's CapPa: pre-norm blocks of causal self-attention -> cross-attention to the image
tokens -> MLP, 6 blocks as wide as the encoder at the B size, captions of at most 64 tokens.

Read top to bottom: the decoder config, its block, the decoder (teacher-forced loss, greedy and beam
decoding), the frozen encoder with its token cache, and the Captioner bundling both with a tokenizer.
Shapes: B batch, L tokens, V vocabulary, M memory (image) tokens, E their width, D decoder width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.text import BOS_ID, EOS_ID, PAD_ID, WordTokenizer
from ..layers import CrossAttention, Linear, Mlp, SelfAttention, init_weights
from .common import as_grid, check_count, check_positive_number, init_position_embedding
from .lookupvit import LookupViT
from .vit import ViT

GridChoice = int | tuple[int, ...]  # a compressed grid: 3 means 3x3

# size -> (embed_dim, depth, num_heads). "b" is CapPa's decoder for a B-sized encoder; "nano" trains in
# seconds on a CPU (tests, Fashion-MNIST-sized experiments).
DECODER_SIZES: dict[str, tuple[int, int, int]] = {
    "nano": (64, 2, 4),
    "micro": (128, 3, 4),
    "s": (384, 6, 6),
    "b": (768, 6, 12),
}


@dataclass
class CaptionDecoderConfig:
    """The caption decoder's size and vocabulary, and the special-token ids it decodes with (caption_decoder_config gives the presets)."""

    vocab_size: int  # len(tokenizer)
    encoder_dim: int  # width E of the image tokens; a Linear maps them to embed_dim when it differs
    embed_dim: int = 768
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    max_length: int = 64  # the longest token sequence, bos and eos included (as WordTokenizer.encode counts)
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        for name in ("vocab_size", "encoder_dim", "embed_dim", "depth", "num_heads"):
            check_count(name, getattr(self, name))
        check_count("max_length", self.max_length, minimum=2)  # bos and eos
        check_positive_number("mlp_ratio", self.mlp_ratio)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        special_ids = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        for name, value in special_ids.items():
            check_count(name, value, minimum=0)
            if value >= self.vocab_size:
                raise ValueError(f"{name} {value} is outside the vocabulary of {self.vocab_size} tokens")
        if len(set(special_ids.values())) != 3:
            raise ValueError(f"pad_id, bos_id and eos_id must differ, got {special_ids}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def caption_decoder_config(size: str, vocab_size: int, encoder_dim: int, **overrides) -> CaptionDecoderConfig:
    """A preset of DECODER_SIZES, e.g. caption_decoder_config("b", len(tokenizer), 768)."""
    if size not in DECODER_SIZES:
        raise ValueError(f"unknown caption decoder size {size!r}; choose one of {sorted(DECODER_SIZES)}")
    embed_dim, depth, num_heads = DECODER_SIZES[size]
    fields = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    return CaptionDecoderConfig(vocab_size=vocab_size, encoder_dim=encoder_dim, **{**fields, **overrides})


class CaptionDecoderBlock(nn.Module):
    """Pre-norm: x + causal MHSA(LN(x)), x + cross-attention(LN(x), memory), x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.self_attn = SelfAttention(dim, num_heads)
        self.cross_attn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = x + self.self_attn(self.self_attn_norm(x), causal=True)
        x = x + self.cross_attn(self.cross_attn_norm(x), memory)
        return x + self.mlp(self.mlp_norm(x))


def gnmt_length_penalty(num_tokens: int, alpha: float) -> float:
    """((5 + n) / 6) ** alpha of Wu et al. 2016 (GNMT, also T5's decoding): beam search divides a
    hypothesis' summed log-probability by it. alpha = 0 compares plain sums, larger alpha favours longer
    captions; n counts the generated tokens, eos included, bos not."""
    return ((5.0 + num_tokens) / 6.0) ** alpha


class CaptionDecoder(nn.Module):
    """Token + learned position embedding, CaptionDecoderBlocks, final LayerNorm, logits over the vocabulary.

    The output projection is tied to the token embedding (logits = LN(x) @ E^T, no bias), as in T5 and
    GPT-2: caption vocabularies are small-data regimes where most words are rare, and tying lets every
    occurrence of a word, as input or as target, train the same vector; it also saves V x D parameters,
    a large share of a small decoder.
    """

    def __init__(self, config: CaptionDecoderConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.token_embed = nn.Embedding(config.vocab_size, dim)
        # The decoder reads at most max_length - 1 tokens: every token of a caption but its last.
        self.pos_embed = init_position_embedding(config.max_length - 1, dim)
        self.memory_proj = Linear(config.encoder_dim, dim) if config.encoder_dim != dim else nn.Identity()
        self.blocks = nn.ModuleList(CaptionDecoderBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_weights)
        # std 1/sqrt(D): the tied logits LN(x) . e_v then start with unit variance.
        nn.init.normal_(self.token_embed.weight, std=dim**-0.5)

    # ---- teacher forcing ---------------------------------------------------------------------

    def forward(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Logits (B, L, V) of the token after each of `tokens` (B, L), reading `memory` (B, M, E)."""
        self.check_memory(memory)
        self.check_tokens(tokens, memory.shape[0])
        return self.logits(self.hidden(tokens, self.project_memory(memory)))

    def loss(self, memory: Tensor, captions: Tensor) -> Tensor:
        """Mean cross-entropy of each next token of `captions` (B, L) = [bos, w1.., eos, pad..].

        Teacher forcing: the decoder reads [bos, w1, ..] and is scored on [w1, .., eos]; padding is
        ignored, so a batch padded to any length gives the same loss.
        """
        if captions.ndim != 2 or captions.shape[1] < 2:
            raise ValueError(f"captions must be (batch, length >= 2) token ids, got shape {tuple(captions.shape)}")
        if captions.shape[1] > self.config.max_length:
            raise ValueError(f"captions of {captions.shape[1]} tokens exceed max_length {self.config.max_length}")
        logits = self(captions[:, :-1], memory)
        targets = captions[:, 1:]
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=self.config.pad_id)

    def project_memory(self, memory: Tensor) -> Tensor:
        return self.memory_proj(memory.to(self.pos_embed.dtype))

    def hidden(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Final-norm states (B, L, D) for `tokens`, reading already projected `memory` (B, M, D)."""
        x = self.token_embed(tokens) + self.pos_embed[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x, memory)
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.token_embed.weight)

    # ---- input checks ------------------------------------------------------------------------

    def check_memory(self, memory: object) -> None:
        if not isinstance(memory, Tensor) or memory.ndim != 3 or memory.shape[2] != self.config.encoder_dim:
            shape = tuple(memory.shape) if isinstance(memory, Tensor) else type(memory).__name__
            raise ValueError(f"memory must be image tokens (batch, tokens, {self.config.encoder_dim}), got {shape}")
        if memory.shape[1] == 0:
            raise ValueError("memory has no tokens to attend to")

    def check_tokens(self, tokens: object, batch: int) -> None:
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
            shape = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be an int64 tensor (batch, length), got {shape}")
        if tokens.shape[0] != batch:
            raise ValueError(f"tokens hold {tokens.shape[0]} sequences but memory {batch} images")
        if not 1 <= tokens.shape[1] < self.config.max_length:
            longest = self.config.max_length - 1
            raise ValueError(f"the decoder reads 1 to {longest} tokens (max_length - 1), got {tokens.shape[1]}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.config.vocab_size - 1}")

    # ---- decoding ----------------------------------------------------------------------------

    def decoding_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.config.max_length
        check_count("max_length", max_length, minimum=2)
        if max_length > self.config.max_length:
            raise ValueError(f"max_length {max_length} exceeds the decoder's max_length {self.config.max_length}")
        return max_length

    def next_token_log_probs(self, tokens: Tensor, memory: Tensor, closing: bool) -> Tensor:
        """log p(next token | tokens) (B, V) as decoding scores it, `memory` already projected.

        <pad> and <bos> are never generated (they are never targets), so the distribution is
        renormalised over the other tokens. `closing`: the next token is the last one max_length
        allows, and only <eos> may take it, at its own log-probability, just as WordTokenizer.encode
        closes a truncated caption with eos.
        """
        logits = self.logits(self.hidden(tokens, memory)[:, -1]).float()
        logits[:, [self.config.pad_id, self.config.bos_id]] = -math.inf
        log_probs = logits.log_softmax(dim=-1)
        if closing:
            eos = log_probs[:, self.config.eos_id].clone()
            log_probs.fill_(-math.inf)
            log_probs[:, self.config.eos_id] = eos
        return log_probs

    @torch.no_grad()
    def greedy(self, memory: Tensor, max_length: int | None = None) -> Tensor:
        """The most likely next token at every step: (B, T) ids [bos, w1.., eos, pad..], T <= max_length."""
        max_length = self.decoding_length(max_length)
        self.check_memory(memory)
        memory = self.project_memory(memory)
        sequences = torch.full((memory.shape[0], 1), self.config.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for length in range(1, max_length):
            log_probs = self.next_token_log_probs(sequences, memory, closing=length == max_length - 1)
            token = log_probs.argmax(dim=-1).masked_fill(done, self.config.pad_id)
            sequences = torch.cat([sequences, token[:, None]], dim=1)
            done |= token == self.config.eos_id
            if done.all():
                break
        return sequences

    @torch.no_grad()
    def beam_search(
        self, memory: Tensor, beam_size: int = 4, length_penalty: float = 0.6, max_length: int | None = None
    ) -> Tensor:
        """The best of `beam_size` hypotheses per image, by summed log-probability / gnmt_length_penalty.

        The beam of each image holds `beam_size` hypotheses; one that ends (emits eos) leaves the beam
        and takes one of its places with it, so the search stops when every place is taken by a
        finished caption (the textbook beam search of Jurafsky & Martin, ch. 10). With beam_size=1 that
        is greedy decoding. Returns (B, T) ids as `greedy` does.
        """
        check_count("beam_size", beam_size)
        if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool) or not 0 <= length_penalty < math.inf:
            raise ValueError(f"length_penalty must be a number >= 0, got {length_penalty!r}")
        max_length = self.decoding_length(max_length)
        self.check_memory(memory)
        batch, vocab = memory.shape[0], self.config.vocab_size
        memory = self.project_memory(memory).repeat_interleave(beam_size, dim=0)
        sequences = torch.full((batch, beam_size, 1), self.config.bos_id, dtype=torch.long, device=memory.device)
        # One live hypothesis to start: beam_size copies of [bos] would fill the beam with duplicates.
        scores = torch.full((batch, beam_size), -math.inf, device=memory.device)
        scores[:, 0] = 0.0
        places = torch.full((batch,), beam_size, device=memory.device)  # beam places not yet taken by a finished caption
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        for length in range(1, max_length):
            log_probs = self.next_token_log_probs(sequences.flatten(0, 1), memory, closing=length == max_length - 1)
            candidates = (scores[:, :, None] + log_probs.view(batch, beam_size, vocab)).flatten(1)
            scores, index = candidates.topk(beam_size, dim=1)  # best first
            scores = scores.masked_fill(torch.arange(beam_size, device=memory.device) >= places[:, None], -math.inf)
            beam, token = index // vocab, index % vocab
            sequences = torch.cat([sequences.gather(1, beam[:, :, None].expand(-1, -1, length)), token[:, :, None]], dim=2)
            ended = (token == self.config.eos_id) & scores.isfinite()
            for row, place in ended.nonzero().tolist():
                penalised = scores[row, place].item() / gnmt_length_penalty(length, length_penalty)
                finished[row].append((penalised, sequences[row, place].tolist()))
            places -= ended.sum(dim=1)
            scores = scores.masked_fill(ended, -math.inf)
            if not scores.isfinite().any():
                break
        best = [max(hypotheses, key=lambda hypothesis: hypothesis[0])[1] for hypotheses in finished]
        return pad_sequences(best, self.config.pad_id, memory.device)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> Tensor:
    """(B, longest) int64 tensor of the sequences, right-padded with `pad_id`."""
    longest = max((len(sequence) for sequence in sequences), default=1)
    padded = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded.to(device)


class FrozenEncoder(nn.Module):
    """A trained LookupViT (or ViT) that only ever encodes: no gradients, always in eval mode.

    Memory tokens: for LookupViT the final-norm compressed tokens (B, prod(grid), D) at `grid` (the
    model's default grid when None), the lookup tokens left out as in the paper; for ViT (the
    baseline) all N final-norm patch tokens (B, N, D). Video models (LookupViViT, ViViT) work alike.
    """

    def __init__(self, model: nn.Module, grid: GridChoice | None = None):
        super().__init__()
        if not isinstance(model, (LookupViT, ViT)):
            raise TypeError(f"FrozenEncoder takes a LookupViT or a ViT (or their video models), got {type(model).__name__}")
        self.model = model.requires_grad_(False).eval()
        self.grid: tuple[int, ...] | None = None  # grid_key reads it: None until set to the checked default
        self.grid = self.grid_key(grid)
        self.cache: dict[tuple[object, tuple[int, ...] | None], Tensor] = {}

    @property
    def dim(self) -> int:
        """Width E of the memory tokens: the decoder config's encoder_dim."""
        return self.model.config.embed_dim

    def train(self, mode: bool = True) -> FrozenEncoder:
        # Captioner.train() must not switch the encoder to training behaviour (stochastic depth).
        return super().train(False)

    def grid_key(self, grid: GridChoice | None) -> tuple[int, ...] | None:
        """The compressed grid a call uses, as a tuple (None for ViT, whose memory has no grid)."""
        if not isinstance(self.model, LookupViT):
            if grid is not None:
                raise ValueError("a ViT encoder has no compressed grid: its memory is all N patch tokens; pass grid=None")
            return None
        if grid is None:
            return self.grid or self.model.compressed_grid
        return as_grid(grid, "grid", len(self.model.config.patch_grid))

    def forward(self, images: Tensor, grid: GridChoice | None = None) -> Tensor:
        """Memory tokens (B, M, D) for `images`, computed without autograd.

        torch.no_grad, not inference_mode: the decoder's memory projection saves its input for
        backward, which autograd refuses for inference tensors.
        """
        grid = self.grid_key(grid)
        with torch.no_grad():
            if isinstance(self.model, LookupViT):
                return self.model.forward_features(images, grid).compressed_tokens
            return self.model.forward_features(images).tokens

    def encode(self, images: Tensor, keys: Iterable[object] | Tensor, grid: GridChoice | None = None) -> Tensor:
        """forward(images, grid), each image's tokens computed once per (key, grid) and then reused.

        `keys` name the images (e.g. dataset indices), one per image; an image seen before under the same
        key and grid is not encoded again, so decoder training pays for the encoder in its first epoch
        only. The key must stand for the same pixels every time: cache no randomly augmented images.
        Tokens stay on the device they were computed on; clear_cache() frees them.
        """
        keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
        if len(keys) != len(images):
            raise ValueError(f"encode got {len(images)} images but {len(keys)} keys; pass one key per image")
        if any(isinstance(key, Tensor) for key in keys):
            raise TypeError("keys must be hashable values such as ints or str, not tensors (which hash by identity)")
        grid = self.grid_key(grid)
        missing: dict[object, int] = {}  # key -> the first row holding its image
        for row, key in enumerate(keys):
            if (key, grid) not in self.cache and key not in missing:
                missing[key] = row
        if missing:
            tokens = self(images[list(missing.values())], grid)
            for key, image_tokens in zip(missing, tokens):
                self.cache[(key, grid)] = image_tokens.clone()  # its own storage, not a view keeping the batch alive
        return torch.stack([self.cache[(key, grid)] for key in keys])

    def clear_cache(self) -> None:
        self.cache.clear()


class Captioner(nn.Module):
    """FrozenEncoder + CaptionDecoder + WordTokenizer: images in, captions out.

    Optimise `trainable_parameters()` (the decoder's): the encoder's parameters are registered, so
    they are saved with the captioner, but they never train.
    """

    def __init__(self, encoder: FrozenEncoder | nn.Module, decoder: CaptionDecoder, tokenizer: WordTokenizer):
        super().__init__()
        encoder = encoder if isinstance(encoder, FrozenEncoder) else FrozenEncoder(encoder)
        config = decoder.config
        if config.encoder_dim != encoder.dim:
            raise ValueError(f"the decoder reads {config.encoder_dim}-wide tokens but the encoder makes {encoder.dim}-wide ones")
        if config.vocab_size != len(tokenizer):
            raise ValueError(f"the decoder's vocab_size {config.vocab_size} differs from the tokenizer's {len(tokenizer)} tokens")
        if (config.pad_id, config.bos_id, config.eos_id) != (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id):
            raise ValueError("the decoder's pad/bos/eos ids differ from the tokenizer's")
        self.encoder = encoder
        self.decoder = decoder
        self.tokenizer = tokenizer

    @classmethod
    def build(
        cls, model: nn.Module, tokenizer: WordTokenizer, size: str = "nano", grid: GridChoice | None = None, **overrides
    ) -> Captioner:
        """A fresh decoder of DECODER_SIZES[size] on the frozen `model`, e.g. Captioner.build(lookupvit, tokenizer, "b")."""
        encoder = FrozenEncoder(model, grid)
        decoder = CaptionDecoder(caption_decoder_config(size, len(tokenizer), encoder.dim, **overrides))
        return cls(encoder, decoder, tokenizer)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.decoder.parameters()

    def memory(self, images: Tensor, grid: GridChoice | None = None, keys: Iterable[object] | None = None) -> Tensor:
        """The encoder's tokens for `images`; through its cache when `keys` name the images."""
        return self.encoder(images, grid) if keys is None else self.encoder.encode(images, keys, grid)

    def loss(
        self, images: Tensor, captions: Sequence[str], grid: GridChoice | None = None, keys: Iterable[object] | None = None
    ) -> Tensor:
        """Teacher-forced cross-entropy of one caption per image."""
        memory = self.memory(images, grid, keys)
        tokens = self.tokenizer.encode_batch(captions, self.decoder.config.max_length).to(memory.device)
        if len(tokens) != len(memory):
            raise ValueError(f"loss got {len(memory)} images but {len(tokens)} captions")
        return self.decoder.loss(memory, tokens)

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        grid: GridChoice | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        max_length: int | None = None,
    ) -> list[str]:
        """One caption per image: greedy for beam_size=1, else beam search (see CaptionDecoder.beam_search)."""
        memory = self.encoder(images, grid)
        if beam_size == 1:
            sequences = self.decoder.greedy(memory, max_length)
        else:
            sequences = self.decoder.beam_search(memory, beam_size, length_penalty, max_length)
        return [self.tokenizer.decode(sequence) for sequence in sequences]
