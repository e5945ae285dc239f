"""An `.npy` file written by appending rows, for outputs whose length is not known up front.

The header is written with room to spare and rewritten with the final row
count on `close`, so rows stream straight to disk and the result is a plain
`.npy` file that `np.load(..., mmap_mode="r")` maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Magic, version 1.0 and the header length take 10 bytes; numpy aligns the data
# to 64 bytes, and 128 leaves room for any shape's digits.
_HEADER_BYTES = 128


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    text = repr(d).encode("latin1")
    body = _HEADER_BYTES - 10
    assert len(text) < body, text
    return b"\x93NUMPY\x01\x00" + body.to_bytes(2, "little") + text.ljust(body - 1) + b"\n"


class NpyAppender:
    """Append rows of shape `row_shape` and dtype `dtype` to the `.npy` file at `path`."""

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...] = ()):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._f = open(self.path, "wb")
        self._f.write(_header(self.dtype, (0, *self.row_shape)))

    def append(self, rows: np.ndarray) -> None:
        """rows: [k, *row_shape], cast to the file's dtype."""
        assert rows.shape[1:] == self.row_shape, (rows.shape, self.row_shape)
        self._f.write(np.ascontiguousarray(rows, dtype=self.dtype).data)
        self.rows += len(rows)

    def close(self) -> None:
        """Write the final header and close; once only (see `abandon` for a file not to be finished)."""
        if self._f.closed:
            return
        self._f.seek(0)
        self._f.write(_header(self.dtype, (self.rows, *self.row_shape)))
        self._f.close()

    def abandon(self) -> None:
        """Close without finishing the file (a failed run: its folder is about to be removed)."""
        self._f.close()
