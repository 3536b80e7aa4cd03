"""Word captions: tokenisation, the >3-occurrence vocabulary rule, fixed-length encoding."""

import pytest
import torch

from crmvae.data.captions import (
    SPECIAL_TOKENS,
    Vocabulary,
    build_vocabulary,
    tokenize,
    truncated_count,
)
from crmvae.errors import DataError


def test_tokenize_splits_words_punctuation_and_clitics() -> None:
    assert tokenize("This Bird's beak, feet,wings;  LONG.") == [
        "this", "bird", "'s", "beak", ",", "feet", ",", "wings", ";", "long", ".",
    ]  # fmt: skip
    assert tokenize("   ") == []


def test_vocabulary_keeps_words_seen_more_than_three_times_in_first_seen_order() -> None:
    captions = [["b", "a"], ["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["d"]]
    # counts: a 4, b 4, c 3, d 1  ->  only a and b (> 3); b was seen first
    vocab = build_vocabulary(captions)
    assert vocab.words == (*SPECIAL_TOKENS, "b", "a")
    assert vocab.index["<exc>"] == 0 and vocab.index["<pad>"] == 1 and vocab.index["<eos>"] == 2
    assert build_vocabulary(captions, min_occurrences=2).words == (*SPECIAL_TOKENS, "b", "a", "c")


def test_encode_known_answer_and_round_trip() -> None:
    vocab = Vocabulary((*SPECIAL_TOKENS, "a", "red", "bird", "."))
    ids = vocab.encode([["a", "red", "bird", "."], ["a", "blue", "bird"]], length=6)
    assert ids.dtype == torch.int64
    assert ids.tolist() == [[3, 4, 5, 6, 2, 1], [3, 0, 5, 2, 1, 1]]  # blue -> <exc>
    assert vocab.decode(ids) == ["a red bird .", "a <exc> bird"]


def test_encode_cuts_to_length_minus_one_words_then_eos() -> None:
    vocab = Vocabulary((*SPECIAL_TOKENS, "w"))
    words = [["w"] * 40, ["w"] * 31, ["w"] * 30]
    ids = vocab.encode(words, length=32)
    assert ids.shape == (3, 32)
    assert (ids[:, 31] == 2).tolist() == [True, True, False]  # cut / exactly full / one pad
    assert ids[2, 30] == 2 and ids[2, 31] == 1
    assert truncated_count(words, 32) == 1
    assert [len(t.split()) for t in vocab.decode(ids)] == [31, 31, 30]


def test_vocabulary_and_token_problems_are_reported() -> None:
    with pytest.raises(DataError, match="must start with"):
        Vocabulary(("a", "<pad>", "<eos>"))
    with pytest.raises(DataError, match="more than once"):
        Vocabulary((*SPECIAL_TOKENS, "a", "a"))
    vocab = Vocabulary((*SPECIAL_TOKENS, "a"))
    with pytest.raises(DataError, match=r"expected \[0, 4\)"):
        vocab.decode(torch.tensor([[3, 4]]))
    with pytest.raises(DataError, match="length must be >= 2"):
        vocab.encode([["a"]], length=1)
