"""Text coherence by edit distance: generated strings against the true class word.

The paper scores generated text by the Levenshtein distance between the generated string and
the label's word (e.g. ``"seven"``), both with spaces and padding removed; an exact match counts
as correct and the mean distance is reported too. The functions are generic: any ``decode``
(token ids -> strings) and any ``target_string`` (label -> string) fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cpdist
from torch import Tensor

from .coherence import Scorer

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_word(label: int) -> str:
    """The English word of a digit label 0..9."""
    return DIGIT_WORDS[label]


def clean_text(text: str, pad: str = "") -> str:
    """``text`` with every space, newline and ``pad`` symbol removed."""
    return "".join(c for c in text if not c.isspace() and c not in pad)


def edit_distances(generated: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Levenshtein distance (unit insert/delete/substitute costs) of each pair, ``int [N]``."""
    if len(generated) != len(targets):
        raise ValueError(f"{len(generated)} generated strings but {len(targets)} targets")
    if not generated:
        return np.zeros(0, dtype=np.int64)
    return cpdist(list(generated), list(targets), scorer=Levenshtein.distance).astype(np.int64)


def text_scorer(
    decode: Callable[[Tensor], list[str]], target_string: Callable[[int], str] = digit_word, pad: str = ""
) -> Scorer:
    """Per-example ``{"exact_match": 1.0 if equal, "distance": Levenshtein}`` of the cleaned decoded
    string against the cleaned target string of the label (see :func:`clean_text`)."""

    def score(tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        generated = [clean_text(s, pad) for s in decode(tokens.cpu())]
        targets = [clean_text(target_string(int(y)), pad) for y in labels.tolist()]
        distance = torch.from_numpy(edit_distances(generated, targets)).float()
        return {"exact_match": (distance == 0).float(), "distance": distance}

    return score
