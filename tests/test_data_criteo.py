"""`data prepare` on the shipped Criteo sample and on crafted raw rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnas_hw.app.cli import main
from dnas_hw.data import criteo
from dnas_hw.data.folder import PreparedData
from dnas_hw.data.splits import DaysSplit, RandomSplit, day_bounds

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE = SHARED / "criteo_kaggle_head2k.tsv"


@pytest.fixture
def shipped_sample() -> Path:
    """The shipped Criteo sample. Missing, its tests fail rather than skip: CI has it at ../shared/data."""
    if not SAMPLE.is_file():
        pytest.fail(f"the shipped Criteo sample is missing: {SAMPLE}")
    return SAMPLE


needs_sample = pytest.mark.usefixtures("shipped_sample")

# Known facts of the sample, from shared/data/README.md.
SAMPLE_ROWS, SAMPLE_POSITIVES = 1999, 418
DISTINCT = [79, 252, 1292, 1042, 30, 6, 1164, 39, 2, 908, 926, 1238, 824, 20, 819, 1158, 9, 534, 200, 3, 1203, 6, 12,
            728, 32, 553]
MISSING = [0, 0, 66, 66, 0, 251, 0, 0, 0, 0, 0, 66, 0, 0, 0, 66, 0, 0, 965, 965, 66, 1631, 0, 66, 965, 965]


def run(*args: str):
    result = CliRunner().invoke(main, ["data", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error(result) -> str:
    """The error line (progress bars may have written their labels to stderr before it)."""
    assert result.exit_code == 2, result.output
    return result.stderr.splitlines()[-1]


def prepare(tmp_path: Path, raw, *options: str, name: str = "out"):
    raws = raw if isinstance(raw, list) else [raw]
    return run("prepare", *raws, "--out", tmp_path / name, *options)


def arrays(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npy"))}


def reference_row(line: str):
    """A plain-Python reading of one raw line: (label, dense float32 [13], hex values or None [26])."""
    fields = line.rstrip("\n").split("\t")
    fields += [""] * (40 - len(fields))
    # float32 log1p of the exact integer (what `log_counts` computes): the parse is what is under test.
    dense = [np.log1p(np.float32(max(int(v), 0))) if v else np.float32(0) for v in fields[1:14]]
    return int(fields[0]), np.array(dense, np.float32), [int(v, 16) if v else None for v in fields[14:]]


@needs_sample
def test_sample_known_facts(tmp_path):
    r = prepare(tmp_path, SAMPLE, "--min-count", "1", "--split", "random", "--val-frac", "0", "--test-frac", "0")
    assert r.exit_code == 0, r.output
    data = PreparedData.open(tmp_path / "out")
    meta = data.meta
    assert meta["splits"]["train"] == {"rows": SAMPLE_ROWS, "positives": SAMPLE_POSITIVES}
    assert meta["skipped_rows"] == 0 and meta["source"]["kind"] == "criteo"
    # Every value of the train rows is in the vocabulary: ids 2.. plus missing (0) and OOV (1).
    assert list(data.cardinalities) == [d + 2 for d in DISTINCT]
    sparse = np.asarray(data.split("train").sparse)
    assert (sparse == 0).sum(axis=0).tolist() == MISSING
    assert [len(np.unique(col[col > 0])) for col in sparse.T] == DISTINCT
    assert (sparse >= 0).all() and (sparse < np.array(data.cardinalities)).all()

    # Row by row against a plain-Python reading: labels, dense transform, id order (sorted hash values).
    lines = SAMPLE.read_text().splitlines()
    split = data.split("train")
    for i in (0, 1, 17, 1998):
        label, dense, hexes = reference_row(lines[i])
        assert split.labels[i] == label
        np.testing.assert_array_equal(split.dense[i], dense)
        assert [h is None for h in hexes] == (split.sparse[i] == 0).tolist()
    assert float(np.min(split.dense)) == 0.0  # negatives (I2) were clipped to 0


@needs_sample
def test_sample_days_split(tmp_path):
    r = prepare(tmp_path, SAMPLE, "--hash-size", "1000")
    assert r.exit_code == 0, r.output
    meta = PreparedData.open(tmp_path / "out").meta
    # 1,999 = 4 days of 286 + 3 of 285; the last day: test 143, val 142.
    assert {s: v["rows"] for s, v in meta["splits"].items()} == {"train": 1714, "val": 142, "test": 143}
    labels = np.array([int(line[0]) for line in SAMPLE.read_text().splitlines()], np.float32)
    data = PreparedData.open(tmp_path / "out")
    np.testing.assert_array_equal(data.split("train").labels, labels[:1714])
    np.testing.assert_array_equal(data.split("test").labels, labels[1714:1857])
    np.testing.assert_array_equal(data.split("val").labels, labels[1857:])
    assert list(data.cardinalities) == [1000] * 26


def test_day_bounds_arithmetic():
    # Kaggle train.txt: DLRM's split gives train 39,291,958, test 3,274,330, val 3,274,329.
    assert day_bounds(45_840_617) == (39_291_958, 39_291_958 + 3_274_330)
    assert day_bounds(7) == (6, 7)  # one row per day: the last day's one row is test
    assert day_bounds(16) == (14, 15)  # days of 3,3,2,2,2,2,2 rows: train 14, test 1, val 1
    assert day_bounds(22) == (19, 21)  # days of 4,3,3,3,3,3,3 rows: train 19, test 2 (rounded up), val 1
    assert day_bounds(3) == (3, 3)  # fewer rows than days: all train
    # Several files: one day each, the last halved (rounded up to test).
    assert DaysSplit(num_files=3, last_file_rows=11).bounds() == (0, 6)
    codes = DaysSplit(3, 11).assign(2, 0, 11)
    assert codes.tolist() == [2] * 6 + [1] * 5
    assert DaysSplit(3, 11).assign(0, 0, 4).tolist() == [0] * 4


def test_random_split_is_per_row_and_seeded():
    s = RandomSplit(0.1, 0.2, seed=3)
    whole = s.assign(0, 0, 100_000)
    np.testing.assert_array_equal(np.concatenate([s.assign(0, 0, 123), s.assign(0, 123, 100_000 - 123)]), whole)
    assert abs((whole == 2).mean() - 0.2) < 0.01 and abs((whole == 1).mean() - 0.1) < 0.01
    assert not np.array_equal(RandomSplit(0.1, 0.2, seed=4).assign(0, 0, 1000), whole[:1000])


@needs_sample
@pytest.mark.parametrize("split", ["days", "random"])
def test_small_chunks_give_the_same_result(tmp_path, split):
    opts = ("--split", split, "--min-count", "2")
    assert prepare(tmp_path, SAMPLE, *opts, name="one").exit_code == 0
    assert prepare(tmp_path, SAMPLE, *opts, "--chunk-rows", "37", name="small").exit_code == 0
    assert arrays(tmp_path / "one") == arrays(tmp_path / "small")
    m1, m2 = (PreparedData.open(tmp_path / n).meta for n in ("one", "small"))
    m1["source"]["options"].pop("chunk_rows"), m2["source"]["options"].pop("chunk_rows")
    assert m1 == m2


@needs_sample
def test_stripped_trailing_fields_are_padded(tmp_path):
    lines = SAMPLE.read_text().splitlines()
    stripped = [line.rstrip("\t") for line in lines]
    counts = {len(s.split("\t")) for s in stripped}
    assert {37, 38} <= counts  # the sample has rows whose last fields are empty
    (tmp_path / "stripped.tsv").write_text("\n".join(stripped))  # and no LF at the end
    assert prepare(tmp_path, SAMPLE, "--hash-size", "5000", name="full").exit_code == 0
    assert prepare(tmp_path, tmp_path / "stripped.tsv", "--hash-size", "5000", name="stripped").exit_code == 0
    assert arrays(tmp_path / "full") == arrays(tmp_path / "stripped")


ROW = "1\t5\t-2\t\t0\t12345678901\t\t3\t\t\t1\t\t\t7\t" + "\t".join(
    ["05db9164", "", "A8CD5504", "1a", "0", "ffffffff"] + ["68fd1e64"] * 20)


def test_parser_matches_python_on_edge_cases():
    lines = [ROW, ROW.replace("\t-2\t", "\t-0\t"), "0" + "\t" * 39, "0\t1\t2", ROW + "\r"]
    rows = criteo.parse_lines(("\n".join(lines) + "\n").encode())
    assert not rows.bad.any()
    for i, line in enumerate(lines):
        label, dense, hexes = reference_row(line.rstrip("\r"))
        assert rows.labels[i] == label
        np.testing.assert_array_equal(rows.dense[i], dense)
        assert rows.missing[i].tolist() == [h is None for h in hexes]
        assert rows.hashes[i].tolist() == [h or 0 for h in hexes]


def test_hash_ids(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text(ROW + "\n")
    assert prepare(tmp_path, raw, "--hash-size", "1000", "--split", "random", "--val-frac", "0", "--test-frac", "0").exit_code == 0
    data = PreparedData.open(tmp_path / "out")
    _, _, hexes = reference_row(ROW)
    expected = [0 if h is None else 1 + h % 999 for h in hexes]
    assert data.split("train").sparse[0].tolist() == expected


def test_min_count_shares_an_oov_id(tmp_path):
    def row(c1: str) -> str:
        return "0\t" + "\t" * 12 + "\t" + c1 + "\t" * 25

    raw = tmp_path / "raw.tsv"
    raw.write_text("\n".join(row(v) for v in ["aa", "aa", "bb", "cc", "cc", "cc", ""]) + "\n")
    opts = ("--min-count", "2", "--split", "random", "--val-frac", "0", "--test-frac", "0")
    assert prepare(tmp_path, raw, *opts).exit_code == 0
    data = PreparedData.open(tmp_path / "out")
    # kept: aa (id 2), cc (id 3); bb seen once -> OOV id 1; missing -> 0.
    assert data.split("train").sparse[:, 0].tolist() == [2, 2, 1, 3, 3, 3, 0]
    assert data.cardinalities[0] == 4 and data.cardinalities[1] == 2
    assert data.meta["ids"] == {"kind": "vocabulary", "min_count": 2, "file": "vocab.npz"}

    # New raw data mapped with the saved vocabulary: the same values keep their ids.
    later = tmp_path / "later.tsv"
    later.write_text("\n".join(row(v) for v in ["cc", "dd", "aa", "bb", ""]) + "\n")
    split = ("--split", "random", "--val-frac", "0", "--test-frac", "0")
    assert prepare(tmp_path, later, "--vocab", tmp_path / "out", *split, name="later").exit_code == 0
    again = PreparedData.open(tmp_path / "later")
    assert again.split("train").sparse[:, 0].tolist() == [3, 1, 2, 1, 0]
    assert again.cardinalities == data.cardinalities


def test_vocab_errors(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text(ROW + "\n")
    split = ("--split", "random", "--val-frac", "0", "--test-frac", "0")
    assert "vocabulary not found" in error(prepare(tmp_path, raw, "--vocab", tmp_path / "nowhere", *split))
    assert "exactly one of" in error(prepare(tmp_path, raw, "--vocab", tmp_path, "--min-count", "2", *split))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "vocab.npz").write_bytes(b"PK\x03\x04 truncated")
    assert "not a readable vocabulary" in error(prepare(tmp_path, raw, "--vocab", tmp_path / "bad", *split))
    np.savez(tmp_path / "bad" / "vocab.npz", min_count=np.int64(1), C1=np.array([3, 2], np.uint32))
    assert "exactly min_count, C1..C26" in error(prepare(tmp_path, raw, "--vocab", tmp_path / "bad", *split))
    assert not (tmp_path / "out").exists()


BAD_ROWS = {
    "too many fields": (ROW + "\textra", "41 fields, expected at most 40"),
    "label": ("2" + ROW[1:], "label must be 0 or 1, got '2'"),
    "dense": (ROW.replace("\t-2\t", "\t1.5\t"), "I2: not an integer: '1.5'"),
    "categorical": (ROW.replace("05db9164", "05db916z"), "C1: not a hex value of at most 8 digits: '05db916z'"),
}


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_bad_row_error_stops_with_file_line_reason(tmp_path, kind):
    bad, reason = BAD_ROWS[kind]
    raw = tmp_path / "raw.tsv"
    raw.write_text("\n".join([ROW, ROW, bad, ROW]) + "\n")
    r = prepare(tmp_path, raw, "--hash-size", "100", "--chunk-rows", "2")
    assert error(r) == f"error: {raw}:3: {reason}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.tsv"]  # no output, no temporary left


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_bad_row_skip_counts_it(tmp_path, kind):
    bad, _ = BAD_ROWS[kind]
    raw = tmp_path / "raw.tsv"
    raw.write_text("\n".join([ROW, ROW, bad, ROW]) + "\n")
    r = prepare(tmp_path, raw, "--hash-size", "100", "--on-bad-row", "skip", "--split", "random", "--test-frac", "0",
                "--val-frac", "0")
    assert r.exit_code == 0, r.output
    meta = PreparedData.open(tmp_path / "out").meta
    assert meta["skipped_rows"] == 1 and meta["splits"]["train"]["rows"] == 3


def test_input_and_output_errors(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text(ROW + "\n")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    gz = tmp_path / "day_0.gz"
    gz.write_bytes(gzip.compress(ROW.encode()))
    cases = [
        ((tmp_path / "nope.tsv",), f"error: {tmp_path / 'nope.tsv'}: no such file"),
        ((empty,), f"error: {empty}: empty input file"),
        ((raw, empty), f"error: {empty}: empty input file"),
        ((gz,), f"error: {gz}: gzip-compressed; decompress it first (e.g. gunzip -k)"),
    ]
    for raws, message in cases:
        r = run("prepare", *raws, "--out", tmp_path / "out", "--hash-size", "10")
        assert r.stderr == message + "\n" and r.exit_code == 2
        assert not (tmp_path / "out").exists()
    assert prepare(tmp_path, raw, "--hash-size", "10").exit_code == 0
    r = prepare(tmp_path, raw, "--hash-size", "10")
    assert r.stderr == f"error: {tmp_path / 'out'}: already exists (use --force to replace it)\n" and r.exit_code == 2
    assert prepare(tmp_path, raw, "--hash-size", "20", "--force").exit_code == 0
    assert PreparedData.open(tmp_path / "out").cardinalities[0] == 20
    r = prepare(tmp_path, raw, "--hash-size", "10", "--min-count", "2", "--force")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1


def test_only_bad_rows_is_an_error(tmp_path):
    raw = tmp_path / "raw.tsv"
    raw.write_text("x\n")
    r = prepare(tmp_path, raw, "--hash-size", "10", "--on-bad-row", "skip")
    assert "no valid rows" in error(r)
    assert not (tmp_path / "out").exists()


@needs_sample
def test_show(tmp_path):
    assert prepare(tmp_path, SAMPLE, "--min-count", "1").exit_code == 0
    r = run("show", tmp_path / "out")
    assert r.exit_code == 0
    assert "train          1,714" in r.stdout and "source: criteo" in r.stdout
    r = run("show", tmp_path / "missing")
    assert r.exit_code == 2 and "no such data folder" in r.stderr


@needs_sample
def test_several_files_one_day_each(tmp_path):
    lines = SAMPLE.read_text().splitlines(keepends=True)
    day0, day1 = tmp_path / "day_0", tmp_path / "day_1"
    day0.write_text("".join(lines[:1500]))
    day1.write_text("".join(lines[1500:]))  # 499 rows: test 250, val 249
    assert prepare(tmp_path, [day0, day1], "--hash-size", "100").exit_code == 0
    data = PreparedData.open(tmp_path / "out")
    assert {s: v["rows"] for s, v in data.meta["splits"].items()} == {"train": 1500, "val": 249, "test": 250}
    labels = np.array([int(line[0]) for line in lines], np.float32)
    np.testing.assert_array_equal(data.split("test").labels, labels[1500:1750])
    # A bad row is reported with its own file's line number.
    day1.write_text("".join(lines[1500:1510]) + "3" + lines[1510][1:])
    r = prepare(tmp_path, [day0, day1], "--hash-size", "100", "--force")
    assert error(r) == f"error: {day1}:11: label must be 0 or 1, got '3'"


@pytest.mark.parametrize("read_bytes", [5, 64, 1 << 20])
@pytest.mark.parametrize("final_lf", [True, False])
def test_reader_cuts_whole_lines(tmp_path, read_bytes, final_lf):
    lines = [ROW, "", "0\t1", ROW.replace("\t5\t", "\t123456\t")] * 3
    raw = tmp_path / "raw.tsv"
    raw.write_text("\n".join(lines) + ("\n" if final_lf else ""))
    blocks = list(criteo.read_line_blocks(raw, chunk_rows=2, read_bytes=read_bytes))
    assert all(len(b) <= 2 for b, _ in blocks)
    assert [b.line(i).decode() for b, _ in blocks for i in range(len(b))] == lines
    assert sum(n for _, n in blocks) == raw.stat().st_size
    assert criteo.count_lines(raw) == len(lines)


def test_parser_agrees_with_plain_python_on_random_rows():
    """Random rows from a small alphabet: the vectorised parser flags exactly the rows the
    plain-Python explanation rejects, and decodes the others as the reference does."""
    rng = np.random.default_rng(0)
    pieces = ["", "0", "1", "-", "7", "12", "-3", "99999999999", "a", "F", "x", " ", "\r", "0b2c", "deadbeef",
              "123456789", "1.5", "05db9164", "-0"]
    lines = []
    for _ in range(3000):
        n_fields = int(rng.integers(1, 43))
        fields = [pieces[i] for i in rng.integers(0, len(pieces), n_fields)]
        if rng.random() < 0.5:  # mostly plausible rows, so that many are valid
            fields = [str(rng.integers(0, 2))] + [str(rng.integers(-2, 10**int(rng.integers(1, 11))))
                                                  for _ in range(13)] + [f"{rng.integers(0, 2**32):08x}"] * 26
            fields[int(rng.integers(0, 40))] = pieces[int(rng.integers(0, len(pieces)))]
        lines.append("\t".join(fields))
    rows = criteo.parse_lines(("\n".join(lines) + "\n").encode())
    for i, line in enumerate(lines):
        try:
            reason = criteo.explain_bad_line(line.encode())
        except AssertionError:
            reason = None
        assert bool(rows.bad[i]) == (reason is not None), (line, reason)
        if reason is None:
            label, dense, hexes = reference_row(line.removesuffix("\r"))
            assert rows.labels[i] == label
            np.testing.assert_array_equal(rows.dense[i], dense)
            assert rows.hashes[i].tolist() == [h or 0 for h in hexes]
