"""Captioning: the word tokenizer, the causal decoder, its decoding, and the frozen encoder it reads."""

import itertools
import json
import math

import pytest
import torch

import lookupvit
from lookupvit.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID, WordTokenizer, split_words
from lookupvit.layers import SelfAttention
from lookupvit.models.captioner import (
    CaptionDecoder,
    CaptionDecoderConfig,
    Captioner,
    FrozenEncoder,
    caption_decoder_config,
    gnmt_length_penalty,
)

from .conftest import randomize_


def tiny_decoder(vocab_size=9, encoder_dim=12, max_length=8, seed=0, scale=None, **overrides) -> CaptionDecoder:
    torch.manual_seed(seed)
    config = CaptionDecoderConfig(
        vocab_size=vocab_size, encoder_dim=encoder_dim, embed_dim=16, depth=2, num_heads=4, mlp_ratio=2.0, max_length=max_length,
        **overrides,
    )
    decoder = CaptionDecoder(config).eval()
    if scale is not None:  # random weights everywhere, so the next-token distributions are peaked and differ by prefix
        randomize_(decoder, seed)
        with torch.no_grad():
            for param in decoder.parameters():
                param.mul_(scale / 0.3)
    return decoder


def lookupvit_encoder(seed=0):
    torch.manual_seed(seed)
    return lookupvit.create_model("lookupvit_nano4", num_classes=10, img_size=28, in_chans=1)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def test_split_words_gives_the_tokens_caption_metrics_score():
    assert split_words("A man, riding a horse!") == ["a", "man", "riding", "a", "horse"]
    assert split_words("The dog's ball -- red/blue.") == ["the", "dog", "'s", "ball", "red/blue"]  # as PTB splits it


def test_tokenizer_fit_orders_by_frequency_and_round_trips():
    tokenizer = WordTokenizer.fit(["A cat sits.", "a dog sits", "A bird"])
    assert tokenizer.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tokenizer.itos[4:] == ["a", "sits", "bird", "cat", "dog"]  # counts 3, 2, then ties alphabetically
    assert len(tokenizer) == 9
    ids = tokenizer.encode("A dog, sits!", max_length=10)
    assert ids == [BOS_ID, 4, 8, 5, EOS_ID]
    assert tokenizer.decode(ids) == "a dog sits"
    assert tokenizer.encode("a zebra", max_length=10) == [BOS_ID, 4, UNK_ID, EOS_ID]


def test_tokenizer_min_count_and_max_size():
    captions = ["a a a b b c"]
    assert WordTokenizer.fit(captions, min_count=2).itos[4:] == ["a", "b"]
    assert WordTokenizer.fit(captions, max_size=5).itos[4:] == ["a"]
    assert len(WordTokenizer.fit(captions, max_size=6)) == 6


def test_encode_truncates_but_keeps_eos():
    tokenizer = WordTokenizer.fit(["one two three four"])
    ids = tokenizer.encode("one two three four", max_length=4)
    assert len(ids) == 4 and ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert tokenizer.decode(ids) == "one two"


def test_decode_stops_at_eos_and_drops_specials():
    tokenizer = WordTokenizer.fit(["red blue"])
    red, blue = tokenizer.stoi["red"], tokenizer.stoi["blue"]
    assert tokenizer.decode([BOS_ID, red, UNK_ID, blue, EOS_ID, red, PAD_ID]) == "red blue"
    assert tokenizer.decode(torch.tensor([BOS_ID, blue, PAD_ID, PAD_ID])) == "blue"


def test_encode_batch_pads_with_pad_id():
    tokenizer = WordTokenizer.fit(["red blue green"])
    batch = tokenizer.encode_batch(["red", "red blue green"], max_length=16)
    assert batch.dtype == torch.long and batch.shape == (2, 5)
    assert batch[0].tolist() == [BOS_ID, tokenizer.stoi["red"], EOS_ID, PAD_ID, PAD_ID]


def test_tokenizer_json_round_trip():
    tokenizer = WordTokenizer.fit(["a man riding a horse", "a dog's ball"])
    restored = WordTokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert restored == tokenizer and restored.itos == tokenizer.itos
    assert restored.encode("a dog's horse", 16) == tokenizer.encode("a dog's horse", 16)


def test_tokenizer_errors():
    with pytest.raises(ValueError, match="no captions"):
        WordTokenizer.fit([])
    with pytest.raises(TypeError, match="not one str"):
        WordTokenizer.fit("a man riding a horse")
    with pytest.raises(ValueError, match="min_count"):
        WordTokenizer.fit(["a"], min_count=0)
    with pytest.raises(ValueError, match="no word occurs"):
        WordTokenizer.fit(["a b"], min_count=2)
    with pytest.raises(ValueError, match="max_size"):
        WordTokenizer.fit(["a b"], max_size=4)
    tokenizer = WordTokenizer.fit(["a b"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([BOS_ID, len(tokenizer)])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([-1])
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode("a", max_length=1)
    with pytest.raises(ValueError, match="specials"):
        WordTokenizer.from_dict({**tokenizer.to_dict(), "specials": ["<pad>"]})
    with pytest.raises(ValueError, match="not a saved WordTokenizer"):
        WordTokenizer.from_dict({"words": ["a"]})


# --------------------------------------------------------------------------------------------
# Causal attention and the decoder
# --------------------------------------------------------------------------------------------


def naive_attention(attention: SelfAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Multi-head attention written out: per-head softmax(q k^T / sqrt(d) + mask) v, then the projection."""
    batch, tokens, dim = x.shape
    heads = attention.num_heads
    head_dim = dim // heads
    q, k, v = (x @ attention.qkv.weight.T + attention.qkv.bias).split(dim, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    if causal:
        future = torch.ones(tokens, tokens, dtype=torch.bool).triu(diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, dim)
    return mixed @ attention.proj.weight.T + attention.proj.bias


@pytest.mark.parametrize("causal", [True, False])
def test_self_attention_matches_naive_masked_softmax(causal):
    attention = randomize_(SelfAttention(16, 4), seed=1).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    expected = naive_attention(attention, x, causal)
    actual = attention(x, causal=True) if causal else attention(x)  # the default stays non-causal
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_changing_a_later_token_never_changes_earlier_logits():
    decoder = tiny_decoder(scale=0.3)
    memory = torch.randn(2, 5, 12)
    tokens = torch.randint(0, 9, (2, 7))
    logits = decoder(tokens, memory)
    for position in range(1, 7):
        changed = tokens.clone()
        changed[:, position] = (changed[:, position] + 1) % 9
        new_logits = decoder(changed, memory)
        torch.testing.assert_close(new_logits[:, :position], logits[:, :position], rtol=0, atol=1e-5)
        assert (new_logits[:, position:] - logits[:, position:]).abs().amax() > 1e-3


def test_logits_read_the_memory():
    decoder = tiny_decoder(scale=0.3)
    tokens = torch.randint(0, 9, (2, 4))
    assert (decoder(tokens, torch.randn(2, 5, 12)) - decoder(tokens, torch.randn(2, 5, 12))).abs().amax() > 1e-3


def test_loss_is_shifted_cross_entropy_ignoring_padding():
    decoder = tiny_decoder(scale=0.3)
    memory = torch.randn(2, 5, 12)
    captions = torch.tensor([[BOS_ID, 5, 6, 7, EOS_ID], [BOS_ID, 8, EOS_ID, PAD_ID, PAD_ID]])
    log_probs = decoder(captions[:, :-1], memory).log_softmax(dim=-1)
    # The targets are the captions shifted by one: row 0 scores 4 tokens, row 1 only [8, eos].
    terms = [log_probs[0, i, captions[0, i + 1]] for i in range(4)] + [log_probs[1, 0, 8], log_probs[1, 1, EOS_ID]]
    expected = -torch.stack(terms).mean()
    torch.testing.assert_close(decoder.loss(memory, captions), expected)
    more_padding = torch.cat([captions, torch.full((2, 2), PAD_ID)], dim=1)
    torch.testing.assert_close(decoder.loss(memory, more_padding), expected)


def test_memory_is_projected_when_widths_differ():
    assert isinstance(tiny_decoder(encoder_dim=12).memory_proj, torch.nn.Linear)
    assert isinstance(tiny_decoder(encoder_dim=16).memory_proj, torch.nn.Identity)


def test_output_projection_is_tied_to_the_token_embedding():
    decoder = tiny_decoder(scale=0.3)
    tokens, memory = torch.randint(0, 9, (1, 3)), torch.randn(1, 5, 12)
    hidden = decoder.hidden(tokens, decoder.project_memory(memory))
    torch.testing.assert_close(decoder(tokens, memory), hidden @ decoder.token_embed.weight.T)


def test_decoder_config_checks():
    with pytest.raises(ValueError, match="vocab_size"):
        CaptionDecoderConfig(vocab_size=0, encoder_dim=8)
    with pytest.raises(ValueError, match="divisible"):
        CaptionDecoderConfig(vocab_size=10, encoder_dim=8, embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="max_length"):
        CaptionDecoderConfig(vocab_size=10, encoder_dim=8, max_length=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CaptionDecoderConfig(vocab_size=2, encoder_dim=8)
    with pytest.raises(TypeError, match="depth"):
        CaptionDecoderConfig(vocab_size=10, encoder_dim=8, depth=2.0)
    with pytest.raises(ValueError, match="unknown caption decoder size"):
        caption_decoder_config("xl", 10, 8)
    b = caption_decoder_config("b", 1000, 768)
    assert (b.embed_dim, b.depth, b.num_heads, b.max_length) == (768, 6, 12, 64)


def test_decoder_input_checks():
    decoder = tiny_decoder()
    with pytest.raises(ValueError, match="memory must be"):
        decoder(torch.zeros(1, 3, dtype=torch.long), torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="sequences but memory"):
        decoder(torch.zeros(2, 3, dtype=torch.long), torch.randn(1, 5, 12))
    with pytest.raises(ValueError, match="reads 1 to 7 tokens"):
        decoder(torch.zeros(1, 8, dtype=torch.long), torch.randn(1, 5, 12))
    with pytest.raises(ValueError, match="token ids"):
        decoder(torch.full((1, 3), 9), torch.randn(1, 5, 12))
    with pytest.raises(ValueError, match="exceeds the decoder's max_length"):
        decoder.greedy(torch.randn(1, 5, 12), max_length=9)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decoding_log_probs(decoder: CaptionDecoder, memory: torch.Tensor, prefix: list[int]) -> torch.Tensor:
    """Next-token log-probabilities after `prefix` as documented: <pad> and <bos> excluded, the rest renormalised."""
    logits = decoder(torch.tensor([prefix]), memory[None])[0, -1].double()
    logits[[PAD_ID, BOS_ID]] = float("-inf")
    return logits.log_softmax(dim=-1)


def exhaustive_best(decoder: CaptionDecoder, memory: torch.Tensor, max_length: int, alpha: float) -> tuple[list[int], float]:
    """Score every caption [bos, w1..wk, eos] with k <= max_length - 2 and return the best."""
    words = [token for token in range(decoder.config.vocab_size) if token not in (PAD_ID, BOS_ID, EOS_ID)]
    best, best_score = None, -math.inf
    for num_words in range(max_length - 1):
        for chosen in itertools.product(words, repeat=num_words):
            sequence = [BOS_ID, *chosen, EOS_ID]
            total = sum(decoding_log_probs(decoder, memory, sequence[:i])[sequence[i]].item() for i in range(1, len(sequence)))
            score = total / (((5 + len(sequence) - 1) / 6) ** alpha)
            if score > best_score:
                best, best_score = sequence, score
    return best, best_score


@pytest.mark.parametrize("max_length", [3, 4])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 3.0])
def test_wide_beam_search_finds_the_exhaustive_best(max_length, alpha):
    decoder = tiny_decoder(vocab_size=7, max_length=max_length, seed=7, scale=1.0)
    memories = torch.randn(6, 5, 12, generator=torch.Generator().manual_seed(3))
    # Wide enough to keep every hypothesis: 5 choices per step, at most 1 + 4 + 16 captions.
    found = decoder.beam_search(memories, beam_size=32, length_penalty=alpha)
    winners = []
    for row, memory in enumerate(memories):
        best, _ = exhaustive_best(decoder, memory, max_length, alpha)
        winners.append(best)
        assert found[row, : len(best)].tolist() == best
        assert (found[row, len(best) :] == PAD_ID).all()
    assert len({tuple(winner) for winner in winners}) > 1, "the memories should lead to different captions"


def test_wide_beam_search_beats_greedy():
    decoder = tiny_decoder(vocab_size=7, max_length=4, seed=7, scale=1.0)
    memories = torch.randn(6, 5, 12, generator=torch.Generator().manual_seed(3))
    found, greedy = decoder.beam_search(memories, beam_size=32, length_penalty=0.6), decoder.greedy(memories)
    assert not torch.equal(found, greedy)


def test_length_penalty_changes_the_winner():
    # The test above could pass with the penalty ignored if no winner depended on it; here one does.
    decoder = tiny_decoder(vocab_size=7, max_length=4, seed=7, scale=1.0)
    memories = torch.randn(6, 5, 12, generator=torch.Generator().manual_seed(3))
    plain = [exhaustive_best(decoder, memory, 4, 0.0)[0] for memory in memories]
    favouring_length = [exhaustive_best(decoder, memory, 4, 3.0)[0] for memory in memories]
    assert plain != favouring_length
    assert gnmt_length_penalty(1, 0.6) == pytest.approx(1.0) and gnmt_length_penalty(7, 1.0) == pytest.approx(2.0)


def test_beam_size_one_is_greedy():
    decoder = tiny_decoder(seed=4, scale=0.5)
    memories = torch.randn(8, 5, 12)
    greedy = decoder.greedy(memories)
    assert torch.equal(decoder.beam_search(memories, beam_size=1, length_penalty=0.6), greedy)
    assert torch.equal(decoder.beam_search(memories, beam_size=1, length_penalty=2.0), greedy)


def test_greedy_is_the_argmax_chain():
    decoder = tiny_decoder(seed=5, scale=0.5)
    memories = torch.randn(4, 5, 12)
    sequences = decoder.greedy(memories, max_length=6)
    for row, memory in enumerate(memories):
        expected = [BOS_ID]
        while expected[-1] != EOS_ID:
            log_probs = decoding_log_probs(decoder, memory, expected)
            if len(expected) == 5:  # the last place max_length allows: only eos
                expected.append(EOS_ID)
            else:
                expected.append(int(log_probs.argmax()))
        assert sequences[row, : len(expected)].tolist() == expected
        assert (sequences[row, len(expected) :] == PAD_ID).all()


def steer_output(decoder: CaptionDecoder, token: int) -> CaptionDecoder:
    """Make `token` the most likely output at every step: orthonormal embeddings, final norm = its embedding."""
    with torch.no_grad():
        torch.nn.init.orthogonal_(decoder.token_embed.weight)
        decoder.norm.weight.zero_()
        decoder.norm.bias.copy_(10 * decoder.token_embed.weight[token])
    return decoder


@pytest.mark.parametrize("beam_size", [1, 3])
def test_eos_stops_decoding(beam_size, monkeypatch):
    decoder = steer_output(tiny_decoder(max_length=8), EOS_ID)
    steps = []
    next_token_log_probs = decoder.next_token_log_probs

    def counting_next_token_log_probs(*args, **kwargs):
        steps.append(1)
        return next_token_log_probs(*args, **kwargs)

    monkeypatch.setattr(decoder, "next_token_log_probs", counting_next_token_log_probs)
    sequences = decoder.beam_search(torch.randn(3, 5, 12), beam_size=beam_size)
    assert sequences.tolist() == [[BOS_ID, EOS_ID]] * 3
    # Each finished caption takes a place of the beam: step 1 finishes [bos, eos] and keeps beam_size - 1
    # hypotheses, whose best continuations are eos too, so step 2 fills the beam and the search stops.
    assert len(steps) == min(beam_size, 2)
    steps.clear()
    assert decoder.greedy(torch.randn(3, 5, 12)).tolist() == [[BOS_ID, EOS_ID]] * 3
    assert len(steps) == 1


@pytest.mark.parametrize("beam_size", [1, 3])
def test_max_length_is_respected_and_closed_with_eos(beam_size):
    word = 5
    decoder = steer_output(tiny_decoder(max_length=8), word)
    memory = torch.randn(2, 5, 12)
    assert decoder.beam_search(memory, beam_size=beam_size, max_length=4).tolist() == [[BOS_ID, word, word, EOS_ID]] * 2
    assert decoder.greedy(memory).shape == (2, 8)  # the config's max_length by default


# --------------------------------------------------------------------------------------------
# The frozen encoder
# --------------------------------------------------------------------------------------------


@pytest.fixture
def captioner():
    tokenizer = WordTokenizer.fit(["a shoe on the left", "a bag on the right"])
    return Captioner.build(lookupvit_encoder(), tokenizer, "nano", grid=3)


def test_encoder_is_frozen_and_gets_no_gradient(captioner):
    encoder_params = list(captioner.encoder.parameters())
    assert encoder_params and not any(param.requires_grad for param in encoder_params)
    images = torch.randn(2, 1, 28, 28)
    captioner.loss(images, ["a shoe on the left", "a bag"]).backward()
    assert all(param.grad is None for param in encoder_params)
    assert all(param.grad is not None and param.grad.abs().sum() > 0 for param in captioner.decoder.parameters())


def test_optimizer_holds_decoder_parameters_only(captioner):
    optimizer = torch.optim.AdamW(captioner.trainable_parameters(), lr=1e-3)
    encoder_ids = {id(param) for param in captioner.encoder.parameters()}
    held = [param for group in optimizer.param_groups for param in group["params"]]
    assert len(held) == len(list(captioner.decoder.parameters()))
    assert not encoder_ids & {id(param) for param in held}
    before = {name: param.clone() for name, param in captioner.encoder.named_parameters()}
    captioner.loss(torch.randn(2, 1, 28, 28), ["a shoe", "a bag"]).backward()
    optimizer.step()
    assert not encoder_ids & {id(param) for param in optimizer.state}
    assert all(torch.equal(param, before[name]) for name, param in captioner.encoder.named_parameters())


def test_encoder_stays_in_eval_mode(captioner):
    captioner.train()
    assert captioner.training and captioner.decoder.training
    assert not any(module.training for module in captioner.encoder.modules())


def test_lookupvit_memory_is_the_compressed_tokens():
    model = lookupvit_encoder()
    encoder = FrozenEncoder(model, grid=3)
    images = torch.randn(2, 1, 28, 28)
    for grid, num_tokens in ((None, 9), (2, 4), ((3, 4), 12)):
        memory = encoder(images, grid)
        assert memory.shape == (2, num_tokens, 96)
        expected = model.forward_features(images, grid or 3).compressed_tokens
        torch.testing.assert_close(memory, expected)
    assert not encoder(images).requires_grad


def test_vit_memory_is_all_patch_tokens():
    torch.manual_seed(0)
    model = lookupvit.create_model("vit_nano4", num_classes=10, img_size=28, in_chans=1)
    encoder = FrozenEncoder(model)
    images = torch.randn(2, 1, 28, 28)
    memory = encoder(images)
    assert memory.shape == (2, 49, 96)
    torch.testing.assert_close(memory, model.forward_features(images).tokens)
    with pytest.raises(ValueError, match="no compressed grid"):
        encoder(images, grid=3)
    with pytest.raises(TypeError, match="LookupViT or a ViT"):
        FrozenEncoder(torch.nn.Linear(2, 2))


def test_cache_computes_each_image_once_per_grid(monkeypatch):
    model = lookupvit_encoder()
    encoder = FrozenEncoder(model, grid=3)
    batch_sizes = []
    forward_features = model.forward_features

    def counting_forward_features(images, grid=None, **kwargs):
        batch_sizes.append(len(images))
        return forward_features(images, grid, **kwargs)

    monkeypatch.setattr(model, "forward_features", counting_forward_features)
    images = torch.randn(4, 1, 28, 28)
    first = encoder.encode(images[:3], keys=[10, 11, 12])
    again = encoder.encode(images[:3], keys=[10, 11, 12])
    assert batch_sizes == [3]
    assert torch.equal(first, again)
    torch.testing.assert_close(first, forward_features(images[:3], 3).compressed_tokens)
    mixed = encoder.encode(images[[3, 1, 3]], keys=torch.tensor([13, 11, 13]))  # only image 13 is new, encoded once
    assert batch_sizes == [3, 1]
    assert torch.equal(mixed[1], first[1]) and torch.equal(mixed[0], mixed[2])
    assert encoder.encode(images[:1], keys=[10], grid=2).shape == (1, 4, 96)  # another grid is another entry
    assert batch_sizes == [3, 1, 1]
    encoder.clear_cache()
    encoder.encode(images[:1], keys=[10])
    assert batch_sizes == [3, 1, 1, 1]
    with pytest.raises(ValueError, match="one key per image"):
        encoder.encode(images, keys=[1, 2])


def test_captioner_generates_strings_and_checks_its_parts(captioner):
    images = torch.randn(3, 1, 28, 28)
    for beam_size in (1, 2):
        captions = captioner.generate(images, beam_size=beam_size, max_length=6)
        assert len(captions) == 3 and all(isinstance(caption, str) for caption in captions)
        assert all(len(caption.split()) <= 4 for caption in captions)
    other_tokenizer = WordTokenizer.fit(["one two three"])
    with pytest.raises(ValueError, match="vocab_size"):
        Captioner(captioner.encoder, captioner.decoder, other_tokenizer)
    wrong_width = CaptionDecoder(caption_decoder_config("nano", len(captioner.tokenizer), encoder_dim=32))
    with pytest.raises(ValueError, match="wide"):
        Captioner(captioner.encoder, wrong_width, captioner.tokenizer)


# --------------------------------------------------------------------------------------------
# Training works
# --------------------------------------------------------------------------------------------


def test_tiny_decoder_overfits_four_captions():
    captions = ["a red shoe on the left", "a blue bag", "two shoes on the right side", "a bag on the left"]
    tokenizer = WordTokenizer.fit(captions)
    torch.manual_seed(0)
    memory = torch.randn(4, 9, 32)  # four fixed "images"
    decoder = CaptionDecoder(caption_decoder_config("nano", len(tokenizer), encoder_dim=32, max_length=16))
    targets = tokenizer.encode_batch(captions, max_length=16)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        loss = decoder.loss(memory, targets)
        loss.backward()
        optimizer.step()
    decoder.eval()
    assert [tokenizer.decode(sequence) for sequence in decoder.greedy(memory)] == captions
    assert [tokenizer.decode(sequence) for sequence in decoder.beam_search(memory, beam_size=3)] == captions
    assert loss.item() < 0.05
