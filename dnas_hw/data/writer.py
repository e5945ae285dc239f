"""Writing a prepared-data folder (see `folder`) chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnas_hw.data.folder import FORMAT, array_path, check_meta
from dnas_hw.data.npy import NpyAppender
from dnas_hw.data.splits import SPLITS
from dnas_hw.files import write_json_atomic


class FolderWriter:
    """Appends rows to the three splits of the folder at `path`, then writes meta.json.

    Memory is one chunk: rows go straight to the `.npy` files. Use it as a
    context manager, so that a run failing part-way closes its files.
    """

    def __init__(self, path: Path, num_dense: int, num_sparse: int):
        self.path = Path(path)
        self.num_dense, self.num_sparse = num_dense, num_sparse
        self._files = {
            s: (
                NpyAppender(array_path(path, s, "dense"), np.float32, (num_dense,)),
                NpyAppender(array_path(path, s, "sparse"), np.int32, (num_sparse,)),
                NpyAppender(array_path(path, s, "labels"), np.float32),
            )
            for s in SPLITS
        }
        self.positives = dict.fromkeys(SPLITS, 0)

    def append(self, codes: np.ndarray, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray) -> None:
        """codes int8 [n] (index into SPLITS), dense [n, D], sparse [n, F] ids, labels [n]."""
        if len(codes) and (codes == codes[0]).all():  # one split (the days split, mostly): no copies
            self._append(SPLITS[codes[0]], dense, sparse, labels)
            return
        for code, name in enumerate(SPLITS):
            mask = codes == code
            if mask.any():
                self._append(name, dense[mask], sparse[mask], labels[mask])

    def _append(self, split: str, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray) -> None:
        d, s, y = self._files[split]
        d.append(dense)
        s.append(sparse)
        y.append(labels)
        self.positives[split] += int(np.count_nonzero(labels))

    def __enter__(self) -> "FolderWriter":
        return self

    def __exit__(self, *exc) -> None:
        """Close the files of an unfinished folder: a failed run leaves no open file behind."""
        for files in self._files.values():
            for f in files:
                f.abandon()

    def rows(self, split: str) -> int:
        return self._files[split][2].rows

    def finish(self, cardinalities: list[int], skipped_rows: int, source: dict, **extra) -> dict:
        """Close the arrays and write meta.json; returns the meta."""
        for files in self._files.values():
            for f in files:
                f.close()
        meta = {
            "format": FORMAT,
            "num_dense": self.num_dense,
            "num_sparse": self.num_sparse,
            "cardinalities": [int(c) for c in cardinalities],
            "splits": {s: {"rows": self.rows(s), "positives": self.positives[s]} for s in SPLITS},
            "skipped_rows": int(skipped_rows),
            "source": source,
            **extra,
        }
        check_meta(meta, str(self.path / "meta.json"))
        write_json_atomic(self.path / "meta.json", meta)
        return meta
