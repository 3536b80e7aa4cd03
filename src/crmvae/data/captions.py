"""Word captions: tokenisation, the vocabulary rule of the CUB references, fixed-length encoding.

A caption is lower-cased and split into words and punctuation marks (``"a red, small bird."`` ->
``a red , small bird .``). The vocabulary lists the special tokens ``<exc>`` (a word outside the
vocabulary), ``<pad>`` and ``<eos>`` first (ids 0, 1, 2), then the words in order of first
appearance. A caption of length ``L`` holds at most ``L - 1`` words, then ``<eos>``, then
``<pad>`` up to ``L`` (Shi et al. 2019: ``L = 32``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import DataError

EXC, PAD, EOS = "<exc>", "<pad>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (EXC, PAD, EOS)
CAPTION_LENGTH = 32
#: A word is kept when it occurs more than this many times in the training captions.
MIN_OCCURRENCES = 3

_TOKEN = re.compile(r"[a-z0-9]+|'[a-z]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words (runs of letters/digits), clitics (``'s``, as
    NLTK's ``word_tokenize`` splits them) and single punctuation marks; whitespace is dropped."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """An ordered word list whose first entries are :data:`SPECIAL_TOKENS`; id = position."""

    words: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise DataError(
                f"vocabulary must start with {list(SPECIAL_TOKENS)}, got {list(self.words[:3])}"
            )
        if len(set(self.words)) != len(self.words):
            dup = sorted(w for w, c in Counter(self.words).items() if c > 1)
            raise DataError(f"vocabulary lists words more than once: {dup[:10]}")
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, captions: Sequence[Sequence[str]], length: int = CAPTION_LENGTH) -> Tensor:
        """Token ids ``int64 [N, length]`` of tokenised ``captions``: the first ``length - 1``
        words (``<exc>`` for unknown ones), ``<eos>``, then ``<pad>``."""
        if length < 2:
            raise DataError(f"caption length must be >= 2 (a word and <eos>), got {length}")
        exc, pad, eos = (self.index[t] for t in SPECIAL_TOKENS)
        out = torch.full((len(captions), length), pad, dtype=torch.int64)
        for i, words in enumerate(captions):
            ids = [self.index.get(w, exc) for w in words[: length - 1]] + [eos]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def decode(self, tokens: Tensor) -> list[str]:
        """Captions as text from ids ``[N, L]``: words up to the first ``<eos>``, pads dropped."""
        if tokens.ndim != 2:
            raise DataError(f"tokens must have shape [N, L], got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= len(self)):
            raise DataError(
                f"token ids span [{int(tokens.min())}, {int(tokens.max())}], "
                f"expected [0, {len(self)})"
            )
        pad, eos = self.index[PAD], self.index[EOS]
        texts = []
        for row in tokens.tolist():
            words = []
            for t in row:
                if t == eos:
                    break
                if t != pad:
                    words.append(self.words[t])
            texts.append(" ".join(words))
        return texts


def build_vocabulary(
    captions: Iterable[Sequence[str]], min_occurrences: int = MIN_OCCURRENCES
) -> Vocabulary:
    """The special tokens, then every word seen more than ``min_occurrences`` times in the
    tokenised ``captions``, in order of first appearance."""
    counts: Counter[str] = Counter()
    for words in captions:
        counts.update(words)  # Counter keeps first-insertion order
    kept = [w for w, c in counts.items() if c > min_occurrences and w not in SPECIAL_TOKENS]
    return Vocabulary(SPECIAL_TOKENS + tuple(kept))


def truncated_count(captions: Sequence[Sequence[str]], length: int = CAPTION_LENGTH) -> int:
    """How many tokenised captions have more than ``length - 1`` words (cut when encoded)."""
    return sum(len(words) > length - 1 for words in captions)
