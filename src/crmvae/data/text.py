"""Character-level text: the 71-symbol alphabet of Sutter et al. (2020) and its encodings.

A string of length ``L`` is stored as token ids ``int64 [L]`` over :data:`ALPHABET`; networks see
it as one-hot ``float [L, 71]``. The reference alphabet lists ``'-'`` twice (ids 36 and 59);
encoding uses the first, decoding maps both back to ``'-'``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

#: The 71 symbols: letters, digits, punctuation, space and newline (``'-'`` at 36 and 59).
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"\\/|_@#$%^&*~`+-=<>()[]{} \n"
VOCAB_SIZE = len(ALPHABET)
#: Symbol -> id; a repeated symbol keeps its first id.
SYMBOL_IDS: dict[str, int] = {}
for _i, _c in enumerate(ALPHABET):
    SYMBOL_IDS.setdefault(_c, _i)
#: Code point -> id (-1: not in the alphabet; the last entry stands for every larger code point).
_LOOKUP = np.full(max(map(ord, ALPHABET)) + 2, -1, dtype=np.int64)
_LOOKUP[[ord(c) for c in SYMBOL_IDS]] = list(SYMBOL_IDS.values())


def encode_strings(strings: Sequence[str], length: int, pad: str = " ") -> Tensor:
    """Token ids ``int64 [N, length]`` of ``strings``, each right-padded with ``pad``.

    Raises :class:`DataError` for a string longer than ``length`` or a symbol outside
    :data:`ALPHABET` (naming the string and the symbol).
    """
    if pad not in SYMBOL_IDS:
        raise DataError(f"padding symbol {pad!r} is not in the {VOCAB_SIZE}-symbol alphabet")
    for i, text in enumerate(strings):
        if len(text) > length:
            raise DataError(f"string {i} ({text!r}) has {len(text)} symbols, more than {length}")
    joined = "".join(text.ljust(length, pad) for text in strings)
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = _LOOKUP[np.minimum(codes, len(_LOOKUP) - 1)]
    if (ids < 0).any():
        i = int(np.flatnonzero(ids < 0)[0])
        text = strings[i // length]
        raise DataError(f"string {i // length} ({text!r}) has symbol {joined[i]!r} outside the alphabet")
    return torch.from_numpy(ids.reshape(len(strings), length))


def decode_tokens(tokens: Tensor) -> list[str]:
    """The strings of token ids ``[N, L]`` (ids in ``[0, 71)``)."""
    if tokens.ndim != 2 or tokens.is_floating_point():
        raise DataError(f"tokens must be integer ids [N, L], got {tokens.dtype} {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= VOCAB_SIZE):
        raise DataError(
            f"token ids span [{int(tokens.min())}, {int(tokens.max())}], expected [0, {VOCAB_SIZE})"
        )
    return ["".join(ALPHABET[i] for i in row) for row in tokens.tolist()]


def one_hot(tokens: Tensor) -> Tensor:
    """``float32 [..., L, 71]``: ``one_hot[..., l, v] = 1`` iff ``tokens[..., l] == v``."""
    return F.one_hot(tokens, VOCAB_SIZE).float()
