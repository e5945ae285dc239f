"""Writing rows in the raw Criteo format, vectorised (for `data synth --raw-tsv`).

Each row becomes a fixed-width byte matrix (label, then a tab and a
right-aligned field for each of the 39 features, then LF) plus a mask of the
bytes that belong to the text; `matrix[mask]` is the row text, all rows at
once, in row order.
"""

from __future__ import annotations

import numpy as np

_DIGITS = 10  # dense values are below 10**_DIGITS
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_TAB, _LF, _MINUS = 9, 10, ord("-")


def _int_fields(values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values int64 [n, k] (|v| < 10**_DIGITS) -> bytes, mask uint8/bool [n, k, 2 + _DIGITS]: tab, sign, digits."""
    width = 2 + _DIGITS
    out = np.empty((*values.shape, width), np.uint8)
    out[..., 0] = _TAB
    out[..., 1] = _MINUS
    rest = np.abs(values)
    num_digits = np.ones(values.shape, np.int64)
    for i in range(width - 1, 1, -1):  # digits from the last; division by a constant is fast
        quotient = rest // 10
        out[..., i] = rest - quotient * 10 + ord("0")
        num_digits += quotient > 0
        rest = quotient
    mask = np.arange(width) >= width - num_digits[..., None]
    mask[..., 1] = values < 0  # the masked-out leading zeros between sign and digits drop out
    mask &= ~missing[..., None]
    mask[..., 0] = True
    return out, mask


def _hex_fields(hashes: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hashes uint32 [n, k] -> bytes, mask [n, k, 9]: tab, 8 lowercase hex digits."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    out = np.empty((*hashes.shape, 9), np.uint8)
    out[..., 0] = _TAB
    out[..., 1:] = _HEX[(hashes[..., None] >> shifts) & np.uint32(0xF)]
    mask = np.repeat(~missing[..., None], 9, axis=-1)
    mask[..., 0] = True
    return out, mask


def format_rows(
    labels: np.ndarray, dense: np.ndarray, dense_missing: np.ndarray, hashes: np.ndarray, sparse_missing: np.ndarray
) -> bytes:
    """Raw Criteo text of n rows: labels [n] (0/1), dense int64 [n, 13] with
    dense_missing bool [n, 13], hashes uint32 [n, 26] with sparse_missing bool [n, 26]."""
    n = len(labels)
    if np.abs(dense[~dense_missing]).max(initial=0) >= 10**_DIGITS - 1:
        raise ValueError(f"dense values must stay below {10**_DIGITS - 1} in magnitude")
    d_bytes, d_mask = _int_fields(dense, dense_missing)
    h_bytes, h_mask = _hex_fields(hashes, sparse_missing)
    label = (np.asarray(labels) != 0).astype(np.uint8)[:, None] + ord("0")
    matrix = np.concatenate(
        [label, d_bytes.reshape(n, -1), h_bytes.reshape(n, -1), np.full((n, 1), _LF, np.uint8)], axis=1
    )
    mask = np.concatenate(
        [np.ones((n, 1), bool), d_mask.reshape(n, -1), h_mask.reshape(n, -1), np.ones((n, 1), bool)], axis=1
    )
    return matrix[mask].tobytes()
