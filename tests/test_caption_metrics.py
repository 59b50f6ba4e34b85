"""Caption metrics: the Java-free tokenizer against PTB, and the scores against naive re-implementations written here."""

import math
import shutil
from collections import Counter

import pytest

from lookupvit.evaluation.captions import CaptionScores, caption_scores, ptb_tokenize, simple_tokenize


# Captions and what coco-caption's PTBTokenizer + punctuation filter made of them (recorded with Java;
# test_ptb_tokenizer_gives_the_recorded_tokens checks the record wherever Java is present).
PTB_TOKENS = {
    "A man on a skateboard.": "a man on a skateboard",
    "A MAN IS RIDING A HORSE.": "a man is riding a horse",
    "A dog's ball, on the grass.": "a dog 's ball on the grass",
    "Two dogs' toys, a cat's bed.": "two dogs toys a cat 's bed",
    "Two men don't like it!": "two men do n't like it",
    "I can't and won't go; cannot.": "i ca n't and wo n't go can not",
    "They're here, we've gone, I'll, he'd, I'm.": "they 're here we 've gone i 'll he 'd i 'm",
    "The dog's.": "the dog 's",
    "A black-and-white photo of a well-known cat.": "a black-and-white photo of a well-known cat",
    "A man - running -- fast.": "a man running fast",
    "-dog and cat-": "dog and cat",
    "3-4 dogs near an x-ray.": "3-4 dogs near an x-ray",
    "He said \"hello\" to 'them'.": "he said hello to them",
    "A man's (red) hat [left] {top}.": "a man 's -lrb- red -rrb- hat -lsb- left -rsb- -lcb- top -rcb-",
    "Costs 3.5 dollars, 1,000 people at 5:30 p.m. today.": "costs 3.5 dollars 1,000 people at 5:30 p.m. today",
    "Mr. Smith in the U.S.": "mr. smith in the u.s.",
    "Wow... really?! Yes: no.": "wow really ?! yes no",
    "Rock & roll / jazz * stars # 1 $5 100% a+b = c": "rock & roll / jazz * stars # 1 $ 5 100 % a + b = c",
    "Caf\u00e9 \u201cquoted\u201d \u2018single\u2019 \u2014 dash, dog\u2019s ball": "caf\u00e9 quoted single dash dog 's ball",
    "A  DOG   WITH\ttabs": "a dog with tabs",
    "o'clock, ma'am, gonna wanna": "o'clock ma'am gon na wan na",
    "ok.Then a,b x:y": "ok.then a b x y",
    "": "",
}


def test_simple_tokenizer_gives_ptb_tokens():
    for caption, expected in PTB_TOKENS.items():
        assert simple_tokenize(caption) == expected, caption


def test_ptb_tokenizer_gives_the_recorded_tokens():
    captions = list(PTB_TOKENS)
    assert ptb_tokenize(captions) == list(PTB_TOKENS.values())


def test_documented_tokenizer_differences_are_real():
    """The differences simple_tokenize's docstring lists: if PTB ever agreed, the docstring would be wrong."""
    captions = ["what?No", "etc., and more", "y'all", "rock'n'roll"]
    ptb = ptb_tokenize(captions)
    assert all(simple_tokenize(caption) != tokens for caption, tokens in zip(captions, ptb))


def test_ptb_line_breaks_inside_a_caption_do_not_shift_later_captions():
    assert ptb_tokenize(["one\u2028two\rthree", "four"]) == ["one two three", "four"]


def test_simple_tokenizer_rejects_non_strings():
    with pytest.raises(TypeError, match="str"):
        simple_tokenize(None)


# --- naive reference computations, on whitespace tokens -------------------------------------------------


def ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def naive_bleu(refs: dict, cands: dict, max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..max_n: clipped n-gram precisions summed over images, brevity penalty from the reference
    lengths closest to each candidate's length (the shorter on a tie), coco-caption's "closest" option."""
    matched = [0] * max_n
    total = [0] * max_n
    cand_len = ref_len = 0
    for key, cand in cands.items():
        words = cand.split()
        ref_words = [ref.split() for ref in refs[key]]
        cand_len += len(words)
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
        for n in range(1, max_n + 1):
            counts = ngram_counts(words, n)
            best = Counter()
            for r in ref_words:
                best |= ngram_counts(r, n)  # Counter union keeps the larger count of each n-gram
            matched[n - 1] += sum(min(count, best[gram]) for gram, count in counts.items())
            total[n - 1] += max(len(words) - n + 1, 0)
    brevity = 1.0 if cand_len >= ref_len else math.exp(1 - ref_len / cand_len)
    scores = []
    for n in range(1, max_n + 1):
        log_mean = sum(math.log(matched[k] / total[k]) for k in range(n)) / n
        scores.append(brevity * math.exp(log_mean))
    return scores


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def naive_rouge_l(refs: dict, cands: dict, beta: float = 1.2) -> float:
    """ROUGE-L per image from the best LCS precision and the best LCS recall over its references, averaged."""
    scores = []
    for key, cand in cands.items():
        words = cand.split()
        if not words:
            scores.append(0.0)
            continue
        lcs = [lcs_length(words, ref.split()) for ref in refs[key]]
        precision = max(length / len(words) for length in lcs)
        recall = max(length / len(ref.split()) for length, ref in zip(lcs, refs[key]))
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return sum(scores) / len(scores)


def naive_cider_d(refs: dict, cands: dict, sigma: float = 6.0) -> float:
    """CIDEr-D: tf-idf vectors of 1..4-grams, idf = log(#images / #images whose references hold the n-gram)
    (an n-gram no reference holds counts as held by one), cosine with the candidate's weights clipped to the
    reference's, a gaussian penalty on the difference in words, averaged over references and n, x 10, mean
    over images."""
    num_images = len(cands)
    doc_freq = Counter()
    for key in cands:
        doc_freq.update({gram for ref in refs[key] for n in range(1, 5) for gram in ngram_counts(ref.split(), n)})

    def tfidf(words: list[str]) -> list[dict]:
        return [
            {
                gram: count * (math.log(num_images) - math.log(max(1, doc_freq[gram])))
                for gram, count in ngram_counts(words, n).items()
            }
            for n in range(1, 5)
        ]

    image_scores = []
    for key, cand in cands.items():
        cand_words = cand.split()
        cand_vecs = tfidf(cand_words)
        total = 0.0
        for ref in refs[key]:
            ref_words = ref.split()
            ref_vecs = tfidf(ref_words)
            delta = len(cand_words) - len(ref_words)
            penalty = math.exp(-(delta**2) / (2 * sigma**2))
            for cand_vec, ref_vec in zip(cand_vecs, ref_vecs):
                dot = sum(min(weight, ref_vec.get(gram, 0.0)) * ref_vec.get(gram, 0.0) for gram, weight in cand_vec.items())
                norm = math.sqrt(sum(w * w for w in cand_vec.values())) * math.sqrt(sum(w * w for w in ref_vec.values()))
                total += (dot / norm if norm else 0.0) * penalty
        image_scores.append(10.0 * total / (4 * len(refs[key])))
    return sum(image_scores) / len(image_scores)


# Tokenized already (lower case, no punctuation), so both tokenizers leave them as they are. Lengths differ
# (the gaussian penalty matters), n-grams repeat (clipping matters), one candidate is a single word.
REFS = {
    "img1": ["a cat sits on the mat", "the cat is on the mat", "a black cat lying on a red mat in the sun"],
    "img2": ["a dog runs in the park", "a brown dog running on the grass", "dog dog playing in a park"],
    "img3": ["two people ride bikes down the street", "people riding bicycles on a city street"],
    "img4": ["a plate of food with rice and beans", "rice beans and meat on a white plate", "a plate of food"],
    "img5": ["a dog sleeps on a sofa", "a dog lying on the couch"],
}
CANDS = {
    "img1": "a cat on the mat the cat",
    "img2": "a dog dog dog in the park",
    "img3": "people riding bicycles on a street in the city on a sunny day",
    "img4": "plate",
    "img5": "a dog lying on a sofa",
}


def test_bleu_and_rouge_by_hand():
    refs = {"x": ["the cat sat on a mat"]}
    scores = caption_scores(refs, {"x": "the cat sat on the mat"}, tokenizer="simple")
    # matches: 5/6 unigrams, 3/5 bigrams, 2/4 trigrams, 1/3 4-grams; equal lengths, no brevity penalty
    assert scores.bleu4 == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    assert scores.bleu1 == pytest.approx(5 / 6, abs=1e-6)
    # LCS "the cat sat on mat" = 5 of 6 words either way: P = R = F = 5/6
    assert scores.rouge_l == pytest.approx(5 / 6, abs=1e-6)


def test_bleu_uses_the_closest_reference_length():
    # every n-gram of the candidate is in a reference: only the brevity penalty is left
    refs = {"x": ["a b c d e", "a b", "a b c d e f g h i j"]}
    scores = caption_scores(refs, {"x": "a b c d"}, tokenizer="simple")
    assert scores.bleu4 == pytest.approx(math.exp(1 - 5 / 4), abs=1e-6)  # closest is 5 words (shortest would be 2)
    scores = caption_scores({"x": ["a b c d e", "a b c"]}, {"x": "a b c d"}, tokenizer="simple")
    assert scores.bleu4 == pytest.approx(1.0, abs=1e-6)  # 3 and 5 are as close: the shorter counts


def test_bleu_and_rouge_match_naive_computation():
    scores = caption_scores(REFS, CANDS, tokenizer="simple")
    bleu = naive_bleu(REFS, CANDS)
    assert [scores.bleu1, scores.bleu2, scores.bleu3, scores.bleu4] == pytest.approx(bleu, abs=1e-6)
    assert scores.rouge_l == pytest.approx(naive_rouge_l(REFS, CANDS), abs=1e-6)
    assert scores.bleu4 > 0.05  # the example is not degenerate


def test_cider_matches_naive_computation():
    scores = caption_scores(REFS, CANDS, tokenizer="simple")
    assert scores.cider == pytest.approx(naive_cider_d(REFS, CANDS), abs=1e-6)
    assert scores.cider > 0.1
    assert scores.num_images == len(CANDS)


def test_cider_depends_on_the_scored_image_set():
    subset = {key: CANDS[key] for key in ("img1", "img2", "img5")}
    alone = caption_scores(REFS, subset, tokenizer="simple").cider
    assert alone == pytest.approx(naive_cider_d(REFS, subset), abs=1e-6)
    assert alone != pytest.approx(caption_scores(REFS, CANDS, tokenizer="simple").cider, abs=1e-3)
    assert caption_scores(REFS, {"img1": REFS["img1"][0]}, tokenizer="simple").cider == 0.0  # one image: every idf is 0


def test_references_of_unscored_images_are_ignored():
    subset = {key: CANDS[key] for key in ("img1", "img3")}
    only_needed = {key: REFS[key] for key in subset}
    assert caption_scores(REFS, subset, tokenizer="simple") == caption_scores(only_needed, subset, tokenizer="simple")


def test_matching_captions_beat_a_shuffled_assignment():
    keys = list(REFS)
    matched = {key: REFS[key][0] for key in keys}
    shuffled = {key: REFS[keys[(i + 1) % len(keys)]][0] for i, key in enumerate(keys)}
    good = caption_scores(REFS, matched, tokenizer="simple")
    bad = caption_scores(REFS, shuffled, tokenizer="simple")
    assert good.cider > bad.cider + 1.0
    assert good.bleu4 > bad.bleu4 + 0.3
    assert good.rouge_l > bad.rouge_l + 0.3


def test_empty_candidates_score_zero_without_crashing():
    cands = dict(CANDS, img2="", img3="...")  # "..." is empty once tokenized
    scores = caption_scores(REFS, cands, tokenizer="simple")
    tokenized = {key: simple_tokenize(caption) for key, caption in cands.items()}
    assert scores.cider == pytest.approx(naive_cider_d(REFS, tokenized), abs=1e-6)
    assert scores.rouge_l == pytest.approx(naive_rouge_l(REFS, tokenized), abs=1e-6)
    all_empty = caption_scores(REFS, {key: "" for key in REFS}, tokenizer="simple")
    assert (all_empty.cider, all_empty.bleu1, all_empty.bleu4, all_empty.rouge_l) == (0.0, 0.0, 0.0, 0.0)


def test_scores_as_dict_names_the_tokenizer():
    scores = caption_scores(REFS, CANDS, tokenizer="simple")
    assert isinstance(scores, CaptionScores)
    assert scores.as_dict()["tokenizer"] == "simple" and scores.as_dict()["num_images"] == 5


def test_auto_tokenizer_without_java_is_simple_and_ptb_refuses(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert caption_scores(REFS, CANDS).tokenizer == "simple"
    with pytest.raises(RuntimeError, match="default-jre-headless.*tokenizer='simple'"):
        caption_scores(REFS, CANDS, tokenizer="ptb")
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        caption_scores(REFS, CANDS, tokenizer="spacy")


def test_auto_tokenizer_with_java_is_ptb_and_agrees_with_simple():
    captions = [caption for caption in PTB_TOKENS if caption]
    refs = {i: [caption, "a photo of a dog"] for i, caption in enumerate(captions)}
    # half the candidates right, half another image's caption, one empty
    cands = {i: captions[i if i % 2 else (i + 1) % len(captions)] for i in range(len(captions))}
    cands[0] = ""
    ptb = caption_scores(refs, cands)
    assert ptb.tokenizer == "ptb"
    simple = caption_scores(refs, cands, tokenizer="simple")
    assert ptb.as_dict() == dict(simple.as_dict(), tokenizer="ptb")


def test_bad_inputs_raise_clear_errors():
    refs = {"a": ["a dog"], "b": ["a cat"]}
    with pytest.raises(ValueError, match="no candidate captions"):
        caption_scores(refs, {}, tokenizer="simple")
    missing = {f"m{i}": "a dog" for i in range(7)}
    with pytest.raises(ValueError, match=r"7 of 8 candidate images have no references: 'm0', 'm1', 'm2', 'm3', 'm4', \.\.\."):
        caption_scores(refs, dict(missing, a="a dog"), tokenizer="simple")
    with pytest.raises(ValueError, match="image 'c' has no reference captions"):
        caption_scores(dict(refs, c=[]), {"a": "a dog", "c": "a cow"}, tokenizer="simple")
    with pytest.raises(TypeError, match="candidate for image 'a' must be a str, got NoneType"):
        caption_scores(refs, {"a": None}, tokenizer="simple")
    with pytest.raises(TypeError, match="candidate for image 'a' must be a str, got list"):
        caption_scores(refs, {"a": ["a dog"]}, tokenizer="simple")
    with pytest.raises(TypeError, match="references for image 'a' must be str, got a int"):
        caption_scores({"a": ["a dog", 3]}, {"a": "a dog"}, tokenizer="simple")
    with pytest.raises(TypeError, match="references for image 'a' must be a list of str, got str"):
        caption_scores({"a": "a dog"}, {"a": "a dog"}, tokenizer="simple")
    with pytest.raises(TypeError, match="must be mappings"):
        caption_scores([["a dog"]], ["a dog"], tokenizer="simple")
    with pytest.raises(ValueError, match=r"reference 1 of image 'a' is empty after tokenization \('\.\.\.'\)"):
        caption_scores({"a": ["a dog", "..."]}, {"a": "a dog"}, tokenizer="simple")
