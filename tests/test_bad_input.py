"""Every bad input ends in one `error:` line with exit code 2, nothing wrong passes as success (issue 16).

One test (or a parametrised family) per case of the issue, then a fuzz test that
feeds random bytes, truncated files and extreme numbers to every reader.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cli_checks import one_error_line, run
from dnas_hw.checkpoint import save_checkpoint
from dnas_hw.data.folder import MAX_CARDINALITY, PreparedData
from dnas_hw.dlrm.arch import Arch
from dnas_hw.export import export_checkpoint
from dnas_hw.family import build_model
from dnas_hw.files import lock_path, output_lock, write_json_atomic
from dnas_hw.space import get_space
from dnas_hw.timing import TimingStats
from lut.table import Lut, meta_path
from profiler.overhead import fit_in_model
from test_lut_table import TOY, save_toy
from test_lut_table import B as TOY_B
from search_fixtures import synth_data, toy_lut

SCRIPT = Path(sys.executable).with_name("dnas-hw")
SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "criteo_kaggle_head2k.tsv"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"shipped Criteo sample not found at {SAMPLE}")
B = 4
HEADER = ",".join(["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))])
TINY = Arch(13, (8, 4), (4,) * 26, (16,) * 26, "dot", (8,))


def raw_line(label: int = 0, dense: int = 1, hashed: str = "68fd1e64") -> str:
    return "\t".join([str(label)] + [str(dense)] * 13 + [hashed] * 26)


def write_raw(path: Path, rows: int = 50, bad_at: int | None = None) -> Path:
    """`rows` raw Criteo rows; the row at 1-based `bad_at` has label 2."""
    lines = [raw_line(label=(2 if i + 1 == bad_at else i % 2), dense=i) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def left(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def cli(*args) -> tuple[int, str]:
    """The installed `dnas-hw` in a subprocess: (exit code, stderr); stdout must be empty."""
    result = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.stdout == "", result.stdout
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth_data(tmp_path_factory.mktemp("bad") / "data", rows=1000)


@pytest.fixture(scope="module")
def space(data):
    return get_space("dlrm-tiny", cardinalities=PreparedData.open(data).cardinalities)


@pytest.fixture(scope="module")
def lut_path(space, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "toy.csv"
    toy_lut(space, B).save(path)
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A checkpoint of TINY and its export."""
    folder = tmp_path_factory.mktemp("model")
    save_checkpoint(folder / "model.pt", build_model(TINY, seed=0),
                    extra={"data_meta": {"num_dense": 13, "num_sparse": 26, "cardinalities": [16] * 26}})
    export_checkpoint(folder / "model.pt", folder / "m.onnx")
    return folder


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "arch.json"
    TINY.save(path)
    return path


# ---------------------------------------------------------------- 1. ids the id dtype cannot hold


@pytest.mark.parametrize("size", [3_000_000_000, 10_000_000_000])
def test_a_hash_size_beyond_int32_ids_is_refused(tmp_path, size):
    raw = write_raw(tmp_path / "raw.txt")
    one_error_line(*run("data", "prepare", raw, "--out", tmp_path / "out", "--hash-size", size), "--hash-size")
    assert left(tmp_path) == ["raw.txt"]


def test_a_data_folder_claiming_more_ids_than_int32_holds_is_refused(data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["cardinalities"][0] = 3_000_000_000
    (copy / "meta.json").write_text(json.dumps(meta))
    one_error_line(*run("data", "show", copy), f"at most {MAX_CARDINALITY:,}")


# ---------------------------------------------------------------- 2. resume of a finished search


@pytest.mark.slow
def test_resume_of_a_finished_search_compares_its_options(data, lut_path, tmp_path):
    out = tmp_path / "run"
    common = ["search", "--data", data, "--space", "dlrm-tiny", "--lut", lut_path, "--batch-size", B, "--out", out,
              "--epochs", 2, "--warmup-epochs", 1, "--train-batch-size", 256]
    code, output = run(*common, "--latency-budget", "0.3ms")
    assert code == 0, output
    summary = (out / "summary.json").read_text()
    one_error_line(*run(*common, "--latency-budget", "0.3ms", "--resume", "--seed", 1), "seed (0, now 1)")
    one_error_line(*run(*common, "--latency-budget", "0.4ms", "--resume"), "latency budget")
    code, output = run(*common, "--latency-budget", "0.3ms", "--resume")
    assert code == 0 and "budget" in output, output
    assert (out / "summary.json").read_text() == summary


# ---------------------------------------------------------------- 3. diverged models, NaN in JSON


@pytest.mark.slow
def test_a_diverged_training_fails_and_writes_nothing(data, arch_file, tmp_path):
    one_error_line(*run("train", "--data", data, "--arch", arch_file, "--out", tmp_path / "run", "--lr", "1e12"),
                   "diverged")
    assert left(tmp_path) == ["arch.json"]


def test_json_we_write_holds_null_where_a_value_is_not_finite(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"auc": float("nan"), "rows": [1.5, float("inf")], "ok": 0.25})

    def refuse(constant):
        raise AssertionError(f"{constant} in JSON")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "auc": None, "rows": [1.5, None], "ok": 0.25}


def test_export_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    model = build_model(TINY, seed=0)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "model.pt", model)
    one_error_line(*run("export", "--checkpoint", tmp_path / "model.pt", "--out", tmp_path / "m.onnx"), "NaN")
    assert left(tmp_path) == ["model.pt"]


def test_export_refuses_a_non_finite_parity(model_files, tmp_path, monkeypatch):
    import dnas_hw.export

    monkeypatch.setattr(dnas_hw.export, "parity", lambda *a, **k: {1: float("nan"), 7: 0.0, 512: 0.0})
    one_error_line(*run("export", "--checkpoint", model_files / "model.pt", "--out", tmp_path / "m.onnx"),
                   "not finite")
    assert left(tmp_path) == []


# ---------------------------------------------------------------- 4. LUT values


@pytest.mark.parametrize("change, needle", [
    ({"p50_us": math.inf, "p90_us": math.inf}, "finite"),
    ({"p10_us": 0.0, "p50_us": 0.0, "p90_us": 0.0}, "median latency must be positive"),
    ({"p10_us": -1.0}, "must not be negative"),
    ({"p10_us": 9.0, "p50_us": 3.0}, "ordered"),
    ({"repeats": 0}, "repeats"),
])
def test_every_lut_value_is_checked_on_load(tmp_path, change, needle):
    rows = pd.read_csv(save_toy(tmp_path / "toy.csv"), dtype={"op": str, "params": str})
    for column, value in change.items():
        rows.loc[0, column] = value
    rows.to_csv(tmp_path / "toy.csv", index=False)
    TOY.save(tmp_path / "arch.json")
    one_error_line(*run("lut", "predict", tmp_path / "toy.csv", tmp_path / "arch.json", "--batch-size", TOY_B), needle)


def test_an_unordered_overhead_row_is_refused_but_a_negative_one_is_not(tmp_path):
    rows = pd.read_csv(save_toy(tmp_path / "toy.csv"), dtype={"op": str, "params": str})
    overhead = rows["op"] == "model_overhead"
    rows.loc[overhead, ["p10_us", "p50_us", "p90_us"]] = [110.3, 112.5, -6.3]
    rows.to_csv(tmp_path / "toy.csv", index=False)
    one_error_line(*run("lut", "show", tmp_path / "toy.csv"), "ordered")
    rows.loc[overhead, ["p10_us", "p50_us", "p90_us"]] = [-9.0, -8.0, -7.0]
    rows.to_csv(tmp_path / "toy.csv", index=False)
    assert Lut.load(tmp_path / "toy.csv").rows["p50_us"].min() == -8.0


def test_search_with_an_infinite_lut_row_fails_before_its_run_folder(data, space, tmp_path):
    lut = toy_lut(space, B)
    lut.rows.loc[3, "p50_us"] = math.inf
    lut.rows.loc[3, "p90_us"] = math.inf
    lut.rows.to_csv(tmp_path / "inf.csv", index=False)
    meta_path(tmp_path / "inf.csv").write_text(json.dumps(lut.meta))
    code, output = run("search", "--data", data, "--space", "dlrm-tiny", "--lut", tmp_path / "inf.csv",
                       "--latency-budget", "1ms", "--batch-size", B, "--out", tmp_path / "run")
    one_error_line(code, output, "finite")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 5. outputs that cannot be written


def _commands(tmp: Path, data: Path, lut: Path, models: Path, arch: Path, blocked: Path) -> dict[str, list]:
    raw = write_raw(tmp / "raw.txt")
    return {
        "data prepare": ["data", "prepare", raw, "--out", blocked / "d", "--hash-size", 10],
        "data synth": ["data", "synth", "--rows", 100, "--out", blocked / "d"],
        "data synth --raw-tsv": ["data", "synth", "--rows", 100, "--out", tmp / "s", "--raw-tsv", blocked / "r.tsv"],
        "profile": ["profile", "--space", "dlrm-tiny", "--backend", "onnxruntime", "--batch-size", B,
                    "--out", blocked / "l.csv"],
        "search": ["search", "--data", data, "--space", "dlrm-tiny", "--lut", lut, "--latency-budget", "1ms",
                   "--batch-size", B, "--out", blocked / "s"],
        "train": ["train", "--data", data, "--arch", arch, "--out", blocked / "t"],
        "export": ["export", "--checkpoint", models / "model.pt", "--out", blocked / "m.onnx"],
        "bench --json": ["bench", models / "m.onnx", "--batch-size", 1, "--json", blocked / "b.json"],
        "lut merge": ["lut", "merge", lut, "--out", blocked / "l.csv"],
        "lut validate": ["lut", "validate", lut, "--space", "dlrm-tiny", "--data", data, "--batch-size", B,
                         "--out", blocked / "v.json"],
        "pipeline": ["pipeline", "--out", blocked / "p", "--data", data, "--space", "dlrm-tiny"],
    }


COMMANDS = ["data prepare", "data synth", "data synth --raw-tsv", "profile", "search", "train", "export",
            "bench --json", "lut merge", "lut validate", "pipeline"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_cannot_be_written_is_one_error_before_any_work(command, data, lut_path, model_files, arch_file,
                                                                       tmp_path, monkeypatch):
    import dnas_hw.app.bench
    import profiler.validate

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(dnas_hw.app.bench, "bench", no_work)
    monkeypatch.setattr(profiler.validate, "validate_many", no_work)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder\n")
    args = _commands(tmp_path, data, lut_path, model_files, arch_file, blocked)[command]
    before = left(tmp_path)
    one_error_line(*run(*args), str(blocked))
    assert left(tmp_path) == before


def test_a_read_only_file_system_is_found_before_any_work(lut_path, tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    one_error_line(*run("lut", "merge", lut_path, "--out", tmp_path / "merged.csv"), "Read-only file system")
    assert left(tmp_path) == []


def _full_disk():
    """In the child: files can grow to 64 KiB at most, and a write beyond fails (EFBIG) instead of killing it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["data synth", "train"])
def test_a_write_that_fails_midway_is_one_error_and_leaves_nothing(command, data, arch_file, tmp_path):
    out = tmp_path / "out"
    args = {
        "data synth": ["data", "synth", "--rows", 20000, "--out", out],
        "train": ["train", "--data", data, "--arch", arch_file, "--out", out, "--threads", 1],
    }[command]
    if command == "train":  # a model bigger than the limit
        Arch(13, (64, 64), (64,) * 26, (500,) * 26, "dot", (64,)).save(arch_file)
    before = left(tmp_path)
    result = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300,
                            preexec_fn=_full_disk)
    assert result.returncode == 2, result.stderr
    # Off a terminal a pass that finished (train's first epoch) has its one-line summary; then the error alone.
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("error: ") and "cannot write" in lines[-1], result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in result.stderr
    assert result.stdout == "" and left(tmp_path) == before


# ---------------------------------------------------------------- 6. absurd sizes


def test_an_arch_too_large_for_memory_is_refused_with_the_estimate(data, arch_file, tmp_path, monkeypatch):
    import dnas_hw.memory

    Arch(13, (8, 4), (4,) * 26, (10**12,) * 26, "dot", (8,)).save(arch_file)
    code, output = run("train", "--data", data, "--arch", arch_file, "--out", tmp_path / "run")
    one_error_line(code, output, "needs about")
    assert re.search(r"needs about [0-9.]+ [TP]iB of memory", output) and "is available" in output
    # Dims of 10^6 fit as parameters on a large host, but not their activations: refused with 8 GiB free.
    monkeypatch.setattr(dnas_hw.memory, "available_bytes", lambda: 8 << 30)
    Arch(13, (16, 10**6), (10**6,) * 26, (64,) * 26, "dot", (16,)).save(arch_file)
    one_error_line(*run("train", "--data", data, "--arch", arch_file, "--out", tmp_path / "run"), "8.0 GiB is available")
    assert left(tmp_path) == ["arch.json"]


SPACE = """
cardinalities = [{cards}]
bottom_widths = [4]
bottom_layers = 1
top_widths = [4]
top_layers = 1
emb_dims = [2]
emb_row_fractions = [1.0]
interactions = ["dot"]
""".format(cards=", ".join(["20"] * 26))


@pytest.mark.parametrize("change, needle", [
    (("bottom_widths = [4]", "bottom_widths = [1000000000]"), "bottom_widths"),
    (("20, 20", "1000000000000, 20"), "cardinalities"),
    (("bottom_layers = 1", "bottom_layers = 1000000"), "bottom_layers"),
    (("emb_dims = [2]", "emb_dims = [" + ", ".join(map(str, range(1, 1000))) + "]"), "emb_dims"),
    (("20, 20", f"{2**31 - 1}, 20"), "needs about"),  # valid, but its largest table is 2^31 rows x 65536
])
def test_a_space_beyond_its_bounds_is_refused_before_profiling(tmp_path, change, needle):
    text = SPACE.replace(*change)
    if needle == "needs about":
        text = text.replace("emb_dims = [2]", "emb_dims = [65536]")
    (tmp_path / "space.toml").write_text(text)
    code, output = run("profile", "--space", tmp_path / "space.toml", "--backend", "onnxruntime", "--batch-size", 1,
                       "--out", tmp_path / "lut.csv")
    one_error_line(code, output, needle)
    assert left(tmp_path) == ["space.toml"]


# ---------------------------------------------------------------- 7. one line, nothing before it


@pytest.mark.slow
def test_usage_errors_are_one_error_line_naming_the_option(tmp_path):
    code, stderr = cli("search", "--data", tmp_path, "--space", "dlrm-tiny", "--lut", tmp_path / "l.csv",
                       "--latency-budget", "0.8", "--batch-size", 1, "--out", tmp_path / "run")
    assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and "--latency-budget" in stderr
    code, stderr = cli("bench", tmp_path / "m.onnx", "--threads", 0)
    assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and "--threads" in stderr
    assert left(tmp_path) == []


@pytest.mark.slow
def test_torch_warnings_do_not_reach_the_user(data, arch_file, tmp_path):
    # Adagrad's sparse step makes torch warn about its sparse invariant checks: nothing a user can act on.
    code, stderr = cli("train", "--data", data, "--arch", arch_file, "--out", tmp_path / "run", "--optimizer", "adagrad",
                       "--lr", "1e12", "--threads", 1)
    assert code == 2 and len(stderr.splitlines()) == 1 and "diverged" in stderr, stderr


def test_progress_writes_nothing_before_an_error_line(tmp_path):
    raw = write_raw(tmp_path / "raw.txt", rows=400, bad_at=300)
    code, output = run("data", "prepare", raw, "--out", tmp_path / "out", "--hash-size", 10, "--chunk-rows", 16)
    one_error_line(code, output, "raw.txt:300: label must be 0 or 1")


@pytest.mark.slow
def test_on_a_terminal_the_bar_is_cleared_before_the_error_line(tmp_path):
    import pty

    raw = write_raw(tmp_path / "raw.txt", rows=4000, bad_at=3900)
    main, terminal = pty.openpty()
    try:
        process = subprocess.Popen([str(SCRIPT), "data", "prepare", str(raw), "--out", str(tmp_path / "out"),
                                    "--hash-size", "10", "--chunk-rows", "8", "--threads", "1"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal)
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 1 << 16)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(timeout=300) == 2
    finally:
        os.close(main)
    text = seen.decode(errors="replace")
    assert "\r\x1b[K" in text, text[-300:]
    # What stays on the screen: the cleared line, then the error alone on its line.
    screen = text.rsplit("\r\x1b[K", 1)[1]
    assert screen.strip() == "error: " + f"{raw}:3900: label must be 0 or 1, got '2'", text[-300:]


def test_progress_reports_a_finished_pass_in_one_line_off_a_terminal(tmp_path):
    code, output = run("data", "prepare", write_raw(tmp_path / "raw.txt"), "--out", tmp_path / "out",
                       "--hash-size", 10)
    assert code == 0, output
    assert any(line.startswith("write: ") and "rows/s" in line for line in output.splitlines()), output


# ---------------------------------------------------------------- 8-11. lost or wasted work


def test_pipeline_checks_its_inputs_before_recording_the_options(data, tmp_path):
    one_error_line(*run("pipeline", "--out", tmp_path / "run", "--data", tmp_path / "typo"), "typo")
    one_error_line(*run("pipeline", "--out", tmp_path / "run", "--data", data, "--space", "dlrm-tyni"), "dlrm-tyni")
    assert left(tmp_path) == []


def test_profile_keeps_a_finished_lut_unless_resumed_or_forced(lut_path, tmp_path):
    import shutil

    shutil.copy(lut_path, tmp_path / "lut.csv")
    shutil.copy(meta_path(lut_path), meta_path(tmp_path / "lut.csv"))
    before = (tmp_path / "lut.csv").read_bytes()
    one_error_line(*run("profile", "--space", "dlrm-tiny", "--backend", "onnxruntime", "--batch-size", B,
                        "--out", tmp_path / "lut.csv"), "--force")
    assert (tmp_path / "lut.csv").read_bytes() == before


HOLD = """
import sys
from dnas_hw.files import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_writer_of_one_output_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "lut.csv"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = run("profile", "--space", "dlrm-tiny", "--backend", "onnxruntime", "--batch-size", B,
                           "--resume", "--out", out)
        one_error_line(code, output, f"is being written by another process (pid {holder.pid})")
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and left(tmp_path) == []
    with output_lock(out), output_lock(out):  # one process may nest blocks on one output
        assert lock_path(out).is_file()
    assert not lock_path(out).exists()


def test_temporaries_of_a_killed_prepare_are_removed_by_the_next(tmp_path):
    stale = tmp_path / ".out.k1ll3d.tmp"
    stale.mkdir()
    (stale / "train_dense.npy").write_bytes(b"half written")
    code, output = run("data", "prepare", write_raw(tmp_path / "raw.txt"), "--out", tmp_path / "out",
                       "--hash-size", 10)
    assert code == 0, output
    assert left(tmp_path) == ["out", "raw.txt"]


# ---------------------------------------------------------------- 12. the profiler's overhead row


def test_the_fitted_overhead_row_keeps_its_percentiles_ordered():
    # Per-op p90s add up to more than the p90 of whole models: the p90 residual falls below the p50's.
    whole = [TimingStats(100.0 + 20 * r, 110.0 + 20 * r, 120.0 + 20 * r, 100) for r in range(6)]
    ops = [{"p10_us": {"linear": 10.0 * r}, "p50_us": {"linear": 10.0 * r}, "p90_us": {"linear": 10.0 * r + 200}}
           for r in range(6)]
    overhead = fit_in_model(whole, ops).overhead
    assert overhead.p10_us <= overhead.p50_us <= overhead.p90_us, overhead


# ---------------------------------------------------------------- 13. CSV input


@needs_sample
def test_csv_with_a_header_is_read_like_the_raw_file(tmp_path):
    text = SAMPLE.read_text().replace("\t", ",").replace("\n", "\r\n")
    (tmp_path / "sample.csv").write_text(HEADER + "\r\n" + text)
    for name, raw in (("csv", tmp_path / "sample.csv"), ("tsv", SAMPLE)):
        code, output = run("data", "prepare", raw, "--out", tmp_path / name, "--hash-size", 1000)
        assert code == 0, output
    for split in ("train", "val", "test"):
        for array in ("dense", "sparse", "labels"):
            a, b = (np.load(tmp_path / name / f"{split}_{array}.npy") for name in ("csv", "tsv"))
            assert np.array_equal(a, b), (split, array)


def test_a_bad_row_of_a_csv_names_its_line_in_the_file(tmp_path):
    rows = [raw_line(label=1).replace("\t", ",")] * 3 + ["x" + raw_line()[1:].replace("\t", ",")]
    (tmp_path / "s.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    one_error_line(*run("data", "prepare", tmp_path / "s.csv", "--out", tmp_path / "o", "--hash-size", 10),
                   "s.csv:5: label must be 0 or 1")


@pytest.mark.parametrize("first_line, needle", [
    ("Id,Label," + HEADER.split(",", 1)[1], "CSV whose first line is not the header"),
    ("label,I1,I2", "expected label,I1..I13,C1..C26"),
])
def test_other_csv_layouts_are_named_plainly(tmp_path, first_line, needle):
    (tmp_path / "s.csv").write_text(first_line + "\n" + "1,0,3\n")
    one_error_line(*run("data", "prepare", tmp_path / "s.csv", "--out", tmp_path / "o", "--hash-size", 10), needle)
    assert left(tmp_path) == ["s.csv"]


# ---------------------------------------------------------------- fuzz: every reader


def _random_bytes(seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100, 3000])))


def _truncations(valid: bytes, stop: int, seed: int, n: int = 4) -> list[bytes]:
    """`n` cuts of `valid` strictly before byte `stop` (where every cut leaves it incomplete)."""
    rng = random.Random(seed)
    return [valid[: rng.randrange(0, stop)] for _ in range(n)]


def _fuzz_cases(tmp: Path, data: Path, models: Path) -> dict[str, tuple[str, list, list[bytes]]]:
    """reader -> (file name, command args with FILE and OUT, contents to try)."""
    raw = (raw_line() + "\n").encode() * 3
    toy_csv = save_toy(tmp / "valid.csv")
    lut_text = toy_csv.read_bytes()
    meta_text = meta_path(toy_csv).read_bytes()
    TOY.save(tmp / "toy_arch.json")
    arch = TINY.to_dict()
    arch_text = json.dumps(arch).encode()
    space_text = SPACE.encode()
    checkpoint = (models / "model.pt").read_bytes()
    onnx_bytes = (models / "m.onnx").read_bytes()

    def with_arch(**fields) -> bytes:
        return json.dumps({**arch, **fields}).encode()

    def checkpoint_with(mutate) -> bytes:
        payload = torch.load(models / "model.pt", weights_only=True)
        mutate(payload)
        torch.save(payload, tmp / "mutated.pt")
        return (tmp / "mutated.pt").read_bytes()

    def onnx_with(key: str, value: str) -> bytes:
        import onnx

        proto = onnx.load(str(models / "m.onnx"))
        for prop in proto.metadata_props:
            if prop.key == key:
                prop.value = value
        return proto.SerializeToString()

    big_rows = {**arch, "emb_rows": [10**12] * 26}
    lut_rows = lut_text.decode().splitlines()

    def lut_with(row: int, **values: str) -> bytes:
        """The valid LUT CSV with fields of its data row `row` replaced by these texts."""
        frame = pd.read_csv(toy_csv, dtype=str)
        for column, text in values.items():
            frame.loc[row, column] = text
        return frame.to_csv(index=False).encode()
    cases = {
        "raw rows": ("raw.txt", ["data", "prepare", "FILE", "--out", "OUT", "--hash-size", 100], [
            raw.replace(b"\t1\t", b"\t" + b"9" * 20 + b"\t", 1),  # an integer of 20 digits
            raw.replace(b"68fd1e64", b"68fd1e64f", 1),  # a hash of 9 hex digits
            raw.replace(b"\t1\t", b"\t1e400\t", 1),
            raw.replace(b"\t1\t", b"\t-\t", 1),
            b"2" + raw[1:],
            (HEADER + "\n").encode()[:40] + b"\n" + raw.replace(b"\t", b","),  # a CSV header cut short
            *(_random_bytes(seed) for seed in range(6)),
        ]),
        "LUT CSV": ("lut.csv", ["lut", "predict", "FILE", tmp / "toy_arch.json", "--batch-size", TOY_B], [
            *_truncations(lut_text, len(lut_text) - len(lut_rows[-1]) - 1, seed=1),
            *(_random_bytes(seed) for seed in range(10, 14)),
            *(lut_with(2, **{c: v for c in ("p10_us", "p50_us", "p90_us")}) for v in ("1e400", "-1e400", "nan", "0")),
            lut_with(4, p10_us="-1e400"), lut_with(1, repeats="-1"), lut_with(0, batch_size="100000000000000000000"),
            lut_with(3, p50_us="1e-400"),
        ]),
        "LUT metadata": ("lut.csv", ["lut", "predict", "FILE", tmp / "toy_arch.json", "--batch-size", TOY_B], [
            *_truncations(meta_text, len(meta_text.rstrip()) - 1, seed=2),
            *(_random_bytes(seed) for seed in range(20, 24)),
            b"[]", b'{"threads": 1e400}', b'{"in_model_factor": {"8": "x"}}', b'{"in_model_fit": {"8": 3}}',
        ]),
        "arch JSON": ("arch.json", ["train", "--data", data, "--arch", "FILE", "--out", "OUT"], [
            *_truncations(arch_text, len(arch_text) - 1, seed=3),
            *(_random_bytes(seed) for seed in range(30, 34)),
            json.dumps(big_rows).encode(), with_arch(bottom_mlp=[10**9, 10**9]), with_arch(emb_dims=[1e308] * 26),
            with_arch(num_dense=-1), with_arch(emb_rows=[]), with_arch(interaction="x" * 10**4),
            with_arch(top_mlp=[[1]]), with_arch(family=10**30), b"1e400", b"[" * 100000 + b"]" * 100000,
        ]),
        "space TOML": ("space.toml", ["profile", "--space", "FILE", "--backend", "onnxruntime", "--batch-size", 1,
                                      "--out", "OUT"], [
            *_truncations(space_text, space_text.index(b"]"), seed=4),
            *(_random_bytes(seed) for seed in range(40, 44)),
            space_text.replace(b"[4]", b"[1e400]", 1), space_text.replace(b"[1.0]", b"[1e-400]"),
            space_text.replace(b"[1.0]", b"[nan]"), space_text.replace(b"= 1\n", b"= 99999999999999999999\n", 1),
            space_text.replace(b"[2]", b"[-2]"), space_text + b"family = 'dlrm'\nwhat = 1\n",
        ]),
        "checkpoint": ("model.pt", ["export", "--checkpoint", "FILE", "--out", "OUT"], [
            *_truncations(checkpoint, len(checkpoint), seed=5),
            *(_random_bytes(seed) for seed in range(50, 54)),
            checkpoint_with(lambda p: p.update(arch=big_rows)),
            checkpoint_with(lambda p: next(iter(p["state_dict"].values())).fill_(math.inf)),
            checkpoint_with(lambda p: p.update(format="dnas-hw-model/999")),
            checkpoint_with(lambda p: p["state_dict"].popitem()),
        ]),
        "ONNX": ("m.onnx", ["bench", "FILE", "--batch-size", 1, "--json", "OUT"], [
            *_truncations(onnx_bytes, len(onnx_bytes), seed=6),
            *(_random_bytes(seed) for seed in range(60, 64)),
            onnx_with("dnas_hw.data_meta", json.dumps({"cardinalities": [-5] * 26})),
            onnx_with("dnas_hw.data_meta", '{"cardinalities": [' + ", ".join(["1e400"] * 26) + "]}"),
            onnx_with("dnas_hw.arch", "{" * 10),
        ]),
    }
    return cases


READERS = ["raw rows", "LUT CSV", "LUT metadata", "arch JSON", "space TOML", "checkpoint", "ONNX"]


@pytest.mark.parametrize("reader", READERS)
def test_fuzz_every_reader_ends_in_one_error_line_and_leaves_nothing(reader, data, model_files, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    name, args, contents = _fuzz_cases(inputs, data, model_files)[reader]
    work = tmp_path / "work"
    work.mkdir()
    if reader.startswith("LUT"):
        save_toy(work / name)  # the CSV and its metadata, one of which is replaced
    for i, content in enumerate(contents):
        target = meta_path(work / name) if reader == "LUT metadata" else work / name
        target.write_bytes(content)
        before = left(work)
        out = work / ("out.json" if reader == "ONNX" else "out.onnx" if reader == "checkpoint" else "out")
        argv = [work / name if a == "FILE" else out if a == "OUT" else a for a in args]
        code, output = run(*argv)
        assert code == 2, (reader, i, content[:200], output)
        one_error_line(code, output, "")
        assert left(work) == before, (reader, i, output)


@pytest.mark.slow
@pytest.mark.parametrize("reader", READERS)
def test_fuzz_through_the_installed_command_stderr_is_the_error_alone(reader, data, model_files, tmp_path):
    """One random file per reader through the console script: no warning, label or traceback beside the error."""
    name, args, _ = _fuzz_cases(tmp_path, data, model_files)[reader]
    if reader.startswith("LUT"):
        save_toy(tmp_path / name)
    target = meta_path(tmp_path / name) if reader == "LUT metadata" else tmp_path / name
    target.write_bytes(_random_bytes(99))
    before = left(tmp_path)
    argv = [tmp_path / name if a == "FILE" else tmp_path / "out" if a == "OUT" else a for a in args]
    code, stderr = cli(*argv)
    assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    assert left(tmp_path) == before
