"""`data synth`: Criteo-shaped data with labels from a planted teacher.

Features look like Criteo Kaggle's:

- 13 dense count-like integers, log-normal (heavy right tail), missing at the
  rates of the real sample (I1 44%, I12 78%, ...), I2 sometimes negative;
- 26 categorical features whose values follow Zipf-like frequencies
  (P(rank r) ~ r^-1.1) over cardinalities shaped like Kaggle's, missing at the
  real sample's rates. `scale` shrinks the large ones: a feature with more
  than 1,000 values in Kaggle gets `max(1000, round(kaggle * scale))`; the
  default 0.01 gives 100k rows for the largest table, `scale=1` Kaggle's own.

The planted teacher (its parameters are random, fixed by the seed) gives

    logit = bias
          + sum over pairs (f, g) of IMPORTANT:   <U_f[x_f], U_g[x_g]>     (deep)
          + sum over f in IMPORTANT:              <U_f[x_f], P_f z>        (deep x dense)
          + sum over f in WEAK:                   b_f[x_f]                 (scalar)
          + sum over (f, g) in CROSSES:           c_fg[x_f, x_g]           (pairwise cells)
          + w . z[DENSE_SIGNAL]                                            (dense)

where x_f is the value of categorical feature f, z the standardised model
input log(1 + max(I, 0)) and U_f[v] a random vector of dimension 16 per
value. The deep terms carry most of the variance; as sums of 16-dimensional
dot products, an embedding of dimension 4 can capture only about a quarter of
them, so a model whose IMPORTANT tables are tiny is measurably worse. NOISE
features do not enter at all. `bias` puts the positive rate near 25%; the
label is a Bernoulli draw from sigmoid(logit).

Rows are made in fixed blocks, each from its own random stream, so the same
seed gives the same bytes, and the first N rows are the same for any `rows`
>= N. The split is `RandomSplit` (train 80%, val 10%, test 10%), the same one
`data prepare --split random` applies to the `--raw-tsv` file with the same
seed and fractions.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dnas_hw.data import rawtsv
from dnas_hw.data.criteo import DENSE_NAMES, NUM_DENSE, NUM_SPARSE, SPARSE_NAMES, log_counts
from dnas_hw.data.splits import RandomSplit
from dnas_hw.data.writer import FolderWriter
from dnas_hw.errors import UserError
from dnas_hw.files import atomic_dir, atomic_path, check_writable

KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
# Missing counts out of 1,999 in the shipped Kaggle sample (shared/data/README.md).
_SPARSE_MISSING = (0, 0, 66, 66, 0, 251, 0, 0, 0, 0, 0, 66, 0, 0, 0, 66, 0, 0, 965, 965, 66, 1631, 0, 66, 965, 965)
_DENSE_MISSING = (889, 0, 449, 420, 93, 493, 93, 2, 93, 889, 93, 1554, 420)
SPARSE_MISSING_RATE = np.array(_SPARSE_MISSING) / 1999
DENSE_MISSING_RATE = np.array(_DENSE_MISSING) / 1999
# Dense I = floor(exp(N(mu, sigma))) - 1: counts with a heavy right tail.
DENSE_MU = np.array([0.7, 1.8, 2.0, 1.6, 7.0, 3.5, 1.5, 2.6, 3.5, 0.4, 1.0, 0.4, 1.6])
DENSE_SIGMA = np.array([1.0, 1.6, 1.3, 1.0, 1.9, 1.7, 1.4, 1.0, 1.3, 0.6, 0.9, 0.9, 1.2])
I2_NEGATIVE_RATE = 0.1  # I2 is -1..-3 this often (about 11% of the real sample)
ZIPF_EXPONENT = 1.1
SMALL_TABLE = 1000  # Kaggle tables up to this size are kept as they are

# The teacher's features, as 0-based column indices (C1 is 0).
IMPORTANT = (1, 7, 10, 12)  # C2, C8, C11, C13: no missing values, 583..5,683 values
WEAK = (0, 4, 9, 23)  # C1, C5, C10, C24
CROSSES = ((13, 16),)  # C14 x C17: 27 x 10 cells
DENSE_SIGNAL = (0, 2, 5, 10)  # I1, I3, I6, I11
TEACHER_DIM = 16
POSITIVE_RATE = 0.25
# Standard deviations of each group's contribution to the logit.
DEEP_STD, DEEP_DENSE_STD, WEAK_STD, CROSS_STD, DENSE_STD = 1.6, 0.5, 0.8, 0.5, 0.7

BLOCK_ROWS = 1 << 16  # rows per random stream; part of what "same seed" means


def synth_cardinalities(scale: float) -> tuple[int, ...]:
    """Distinct values per categorical feature (table sizes are these + 1, for missing)."""
    return tuple(k if k <= SMALL_TABLE else max(SMALL_TABLE, round(k * scale)) for k in KAGGLE_CARDINALITIES)


def roles() -> list[str]:
    """The teacher's role of each categorical feature: important, weak, cross or noise."""
    out = ["noise"] * NUM_SPARSE
    for f in IMPORTANT:
        out[f] = "important"
    for f in WEAK:
        out[f] = "weak"
    for pair in CROSSES:
        for f in pair:
            out[f] = "cross"
    return out


def zipf_values(u: np.ndarray, n_values: int) -> np.ndarray:
    """Values 1..n_values, value r with probability ~ r^-ZIPF_EXPONENT, from uniforms u.

    Inverts the CDF of the continuous power law on [1, n_values + 1) and
    rounds down: O(1) per draw whatever the table size.
    """
    a = 1.0 - ZIPF_EXPONENT
    top = (n_values + 1.0) ** a
    r = np.floor((1.0 + u * (top - 1.0)) ** (1.0 / a)).astype(np.int64)
    return np.clip(r, 1, n_values)


def value_hash(feature: int, ids: np.ndarray) -> np.ndarray:
    """A distinct 32-bit hash per (feature, value id): murmur3's finaliser, a bijection."""
    x = (ids.astype(np.uint64) + np.uint64(feature * 0x9E3779B9)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x.astype(np.uint32)


@dataclass
class Teacher:
    """The planted teacher's parameters (see the module docstring)."""

    cardinalities: tuple[int, ...]
    seed: int
    bias: float = 0.0
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # f -> [card + 1, TEACHER_DIM]
    dense_maps: dict[int, np.ndarray] = field(default_factory=dict)  # f -> U_f P_f: [card + 1, NUM_DENSE]
    weak: dict[int, np.ndarray] = field(default_factory=dict)  # f -> [card + 1]
    crosses: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (f, g) -> [card_f + 1, card_g + 1]
    dense_weights: np.ndarray = field(default_factory=lambda: np.zeros(len(DENSE_SIGNAL)))

    @classmethod
    def build(cls, cardinalities: tuple[int, ...], seed: int) -> "Teacher":
        rng = np.random.default_rng([seed, 0x7EAC])
        t = cls(cardinalities, seed)
        n_pairs = len(IMPORTANT) * (len(IMPORTANT) - 1) // 2
        # <u, v> of two N(0, s^2 I_d) vectors has variance d s^4: pick s so the
        # pair terms sum to DEEP_STD.
        s = (DEEP_STD**2 / n_pairs / TEACHER_DIM) ** 0.25
        for f in IMPORTANT:
            t.vectors[f] = rng.normal(0, s, (cardinalities[f] + 1, TEACHER_DIM))
            # <u, P z> with z ~ standard: variance d s^2 q^2 * NUM_DENSE per feature.
            q = DEEP_DENSE_STD / math.sqrt(len(IMPORTANT) * TEACHER_DIM * NUM_DENSE) / s
            # Stored as U_f P_f, so that <U_f[v], P_f z> is one row-wise dot product.
            t.dense_maps[f] = t.vectors[f] @ rng.normal(0, q, (TEACHER_DIM, NUM_DENSE))
        for f in WEAK:
            t.weak[f] = rng.normal(0, WEAK_STD / math.sqrt(len(WEAK)), cardinalities[f] + 1)
        for f, g in CROSSES:
            t.crosses[(f, g)] = rng.normal(0, CROSS_STD / math.sqrt(len(CROSSES)), (cardinalities[f] + 1, cardinalities[g] + 1))
        t.dense_weights = rng.normal(0, DENSE_STD / math.sqrt(len(DENSE_SIGNAL)), len(DENSE_SIGNAL))
        t.bias = t._calibrate_bias()
        return t

    def logits(self, z: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """z float [n, 13] standardised dense inputs, ids int [n, 26] (0 = missing) -> logits [n]."""
        out = np.full(len(ids), self.bias)
        vecs = {f: self.vectors[f][ids[:, f]] for f in IMPORTANT}  # [n, TEACHER_DIM] each
        for i, f in enumerate(IMPORTANT):
            for g in IMPORTANT[i + 1 :]:
                out += np.einsum("nd,nd->n", vecs[f], vecs[g])
            out += np.einsum("nd,nd->n", self.dense_maps[f][ids[:, f]], z)
        for f in WEAK:
            out += self.weak[f][ids[:, f]]
        for (f, g), cells in self.crosses.items():
            out += cells[ids[:, f], ids[:, g]]
        out += z[:, list(DENSE_SIGNAL)] @ self.dense_weights
        return out

    def _calibrate_bias(self) -> float:
        """The bias that makes the mean of sigmoid(logit) POSITIVE_RATE, on a sample."""
        block = make_features(self.cardinalities, self.seed, stream=-1, n=1 << 16)
        logits = self.logits(standardise(block.dense_inputs), block.ids)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if np.mean(1 / (1 + np.exp(-(logits + mid)))) > POSITIVE_RATE:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2

    def describe(self) -> dict:
        return {
            "formula": "logit = bias + sum_{f<g in important} <U_f,U_g> + sum_f <U_f, P_f z> "
            "+ sum_{weak} b_f + sum_{crosses} c_fg + w.z[dense_signal]",
            "roles": dict(zip(SPARSE_NAMES, roles())),
            "important": list(IMPORTANT),
            "weak": list(WEAK),
            "crosses": [list(p) for p in CROSSES],
            "noise": [f for f, r in enumerate(roles()) if r == "noise"],
            "dense_signal": [DENSE_NAMES[j] for j in DENSE_SIGNAL],
            "teacher_dim": TEACHER_DIM,
            "group_std": {"deep": DEEP_STD, "deep_dense": DEEP_DENSE_STD, "weak": WEAK_STD, "cross": CROSS_STD,
                          "dense": DENSE_STD},
            "bias": self.bias,
            "target_positive_rate": POSITIVE_RATE,
        }


@dataclass
class Features:
    """A block of raw features: dense int64 [n, 13] (+ missing), ids int64 [n, 26] (0 = missing)."""

    dense: np.ndarray
    dense_missing: np.ndarray
    ids: np.ndarray

    @property
    def dense_inputs(self) -> np.ndarray:
        """What a model sees: float32 [n, 13] log(1 + max(I, 0)), missing -> 0."""
        return log_counts(np.where(self.dense_missing, 0, np.maximum(self.dense, 0)))


def standardise(dense_inputs: np.ndarray) -> np.ndarray:
    """The teacher's dense input z: log inputs centred and scaled by the generating law."""
    return (dense_inputs - DENSE_MU) / DENSE_SIGMA


def make_features(cardinalities: tuple[int, ...], seed: int, stream: int, n: int) -> Features:
    rng = np.random.default_rng([seed, 0xFEA7, stream + 1])
    ids = np.empty((n, NUM_SPARSE), np.int64)
    u = rng.random((n, NUM_SPARSE))
    for f, card in enumerate(cardinalities):
        ids[:, f] = zipf_values(u[:, f], card)
    ids[rng.random((n, NUM_SPARSE)) < SPARSE_MISSING_RATE] = 0
    dense = np.floor(np.exp(rng.normal(DENSE_MU, DENSE_SIGMA, (n, NUM_DENSE)))).astype(np.int64) - 1
    dense = np.minimum(dense, 999_999_999)
    negative = rng.random(n) < I2_NEGATIVE_RATE
    dense[negative, 1] = -rng.integers(1, 4, int(negative.sum()))
    return Features(dense, rng.random((n, NUM_DENSE)) < DENSE_MISSING_RATE, ids)


@dataclass(frozen=True)
class SynthOptions:
    rows: int
    seed: int = 0
    scale: float = 0.01
    val_frac: float = 0.1
    test_frac: float = 0.1

    def check(self) -> None:
        if self.rows < 1:
            raise UserError(f"--rows must be positive, got {self.rows}")
        if not 0 < self.scale <= 1:
            raise UserError(f"--scale must be in (0, 1], got {self.scale}")
        if not (0 <= self.val_frac and 0 <= self.test_frac and self.val_frac + self.test_frac < 1):
            raise UserError(f"--val-frac {self.val_frac} and --test-frac {self.test_frac}: need fractions summing below 1")


def synth(
    out: Path,
    options: SynthOptions,
    *,
    raw_tsv: Path | None = None,
    force: bool = False,
    progress: Callable[[str], Callable[[int], None]] | None = None,
) -> dict:
    """Write a prepared-data folder at `out` (and the same rows as raw text at `raw_tsv`); returns meta.

    `progress("synth")`, called once the arguments are checked, returns a
    callback that is given the number of rows made after each block.
    """
    options.check()
    for path in (out, raw_tsv):
        if path is not None and Path(path).exists() and not force:
            raise UserError(f"{path}: already exists (use --force to replace it)")
    check_writable(out, "folder")
    if raw_tsv is not None:
        check_writable(raw_tsv, "file")
    cards = synth_cardinalities(options.scale)
    teacher = Teacher.build(cards, options.seed)
    splitter = RandomSplit(options.val_frac, options.test_frac, options.seed)
    update = progress("synth") if progress else (lambda rows: None)
    with atomic_dir(out, force) as tmp, (atomic_path(raw_tsv) if raw_tsv else nullcontext()) as tsv_path, \
            ExitStack() as stack:
        writer = stack.enter_context(FolderWriter(tmp, NUM_DENSE, NUM_SPARSE))
        tsv = open(tsv_path, "wb") if tsv_path else None
        try:
            for block, first in enumerate(range(0, options.rows, BLOCK_ROWS)):
                n = min(BLOCK_ROWS, options.rows - first)
                features = make_features(cards, options.seed, block, n)
                inputs = features.dense_inputs
                logits = teacher.logits(standardise(inputs), features.ids)
                label_rng = np.random.default_rng([options.seed, 0x1AB3, block])
                labels = (label_rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float32)
                codes = splitter.assign(0, first, n)
                writer.append(codes, inputs, features.ids.astype(np.int32), labels)
                if tsv:
                    hashes = np.stack([value_hash(f, features.ids[:, f]) for f in range(NUM_SPARSE)], axis=1)
                    tsv.write(rawtsv.format_rows(labels, features.dense, features.dense_missing, hashes, features.ids == 0))
                update(n)
        finally:
            if tsv:
                tsv.close()
        recorded = {k: getattr(options, k) for k in ("rows", "scale", "val_frac", "test_frac")}
        source = {"kind": "synth", "files": [], "options": recorded, "seed": options.seed}
        cardinalities = [c + 1 for c in cards]  # id 0 is missing
        return writer.finish(cardinalities, 0, source, split=splitter.describe(), teacher=teacher.describe())
