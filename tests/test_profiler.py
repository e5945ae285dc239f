"""The profiler: every registered op profiles, dlrm-tiny end to end, kill and resume, bad input."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_checks import last_error_line, run
from dnas_hw.errors import UserError
from dnas_hw.family import builtin_space_names, load_space
from dnas_hw.ops import registered_ops
from dnas_hw.space import get_space
from lut.table import Lut, meta_path, overhead_call
from profiler.keys import all_keys, space_calls
from profiler.overhead import MIN_FACTOR, REFERENCE_SAMPLES
from profiler.run import BLOCK_OPS, PartialFile, partial_path, profile_to_lut
from profiler.timers import op_input_pool, op_timer
from profiler.validate import validate_lut

B = 4
REPO = Path(__file__).resolve().parents[1]
# A user space small enough that a profile in a subprocess takes seconds, and with more ops than one block
# (`profiler.run.BLOCK_OPS`) so a kill can fall between blocks: 52 embedding keys, 4 linear, 1 dot.
SMALL_SPACE = """
cardinalities = [{cards}]
bottom_widths = [4]
bottom_layers = 1
top_widths = [4]
top_layers = 1
emb_dims = [2, 4]
emb_row_fractions = [1.0]
interactions = ["dot"]
elastic_depth = false
interaction_dims = [4]
""".format(cards=", ".join(str(20 + f) for f in range(26)))


@pytest.fixture(scope="module")
def tiny_lut(tmp_path_factory, one_torch_thread):
    """dlrm-tiny profiled on torch, CPU, one thread, at batch B (the real profile, seconds)."""
    path = tmp_path_factory.mktemp("lut") / "tiny.csv"
    start = time.perf_counter()
    lut = profile_to_lut(get_space("dlrm-tiny"), path, backend="torch", device="cpu", threads=1, batch_sizes=[B])
    return path, lut, time.perf_counter() - start


def _spaces_by_op() -> dict[str, object]:
    """For each registered op, the built-in space with the fewest keys that produces it."""
    spaces = sorted((load_space(n) for n in builtin_space_names()), key=lambda s: len(s.op_calls()))
    found = {}
    for space in spaces:
        for call in space.op_calls():
            found.setdefault(call.op, (space, call))
    return found


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_every_registered_op_has_a_key_in_a_space_and_profiles(backend, one_torch_thread):
    found = _spaces_by_op()
    missing = [op for op in registered_ops() if op not in found]
    assert not missing, f"ops no built-in space produces: {missing}"
    timer = op_timer(backend, "cpu", 1, rounds=1)
    for op in registered_ops():
        space, call = found[op]
        stats = timer.measure(call, [1, B], space.num_sparse)
        for b in (1, B):
            s = stats[b]
            assert s.repeats >= 10 and math.isfinite(s.p50_us) and 0 <= s.p10_us <= s.p50_us <= s.p90_us, (op, b, s)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_block_spreads_each_ops_rounds_over_sweeps_of_every_op(backend, one_torch_thread, monkeypatch):
    space = get_space("dlrm-tiny")
    # Ops of one input signature but different widths: on onnxruntime their null is one graph, made for the first.
    calls = [c for c in space_calls(space) if c.op == "linear"][:3]
    timer = op_timer(backend, "cpu", 1, rounds=3)
    order = []
    real_time = timer._time
    monkeypatch.setattr(timer, "_time", lambda fn, pool: order.append(fn) or real_time(fn, pool))
    stats = timer.measure_block([(c, [1, B]) for c in calls], space.num_sparse)
    assert len(stats) == 3 and all(set(s) == {1, B} and s[B].repeats >= 10 for s in stats)
    # 3 sweeps, each one round of the 3 ops at 2 batch sizes and then of the 2 nulls (one per batch size).
    assert len(order) == 3 * (3 * 2 + 2)
    assert len({id(f) for f in order[:6]}) >= 3 and order[:8] == order[8:16] == order[16:24]


@pytest.mark.slow
def test_dlrm_tiny_profiles_in_seconds_into_a_complete_lut(tiny_lut):
    path, lut, seconds = tiny_lut
    space = get_space("dlrm-tiny")
    assert seconds < 120
    assert lut.keys() == set(all_keys(space, [B]))
    lut.require(set(space.op_calls()) | {overhead_call(13, 26)}, B)
    loaded = Lut.load(path)
    assert len(loaded.rows) == len(space_calls(space)) + 1
    meta = loaded.meta
    for field in ("backend", "backend_version", "device", "device_name", "cpu_model", "threads", "dtype",
                  "torch_version", "onnxruntime_version", "date", "space_hash", "clock", "model_overhead",
                  "in_model_factor", "allocator"):
        assert field in meta, field
    assert (meta["backend"], meta["device"], meta["threads"], meta["space_hash"]) == ("torch", "cpu", 1, space.fingerprint())
    if sys.platform.startswith("linux"):  # glibc: measured with the serving allocator (profiler.allocator)
        assert meta["allocator"].startswith("glibc: trim off")
    assert not partial_path(path).exists() and not meta_path(partial_path(path)).exists()
    assert (loaded.rows["repeats"] > 0).all()
    factors = meta["in_model_factor"]
    assert set(factors) == {str(B)} and set(factors[str(B)]) == {c.op for c in space.op_calls()}
    assert min(factors[str(B)].values()) >= MIN_FACTOR
    fit = meta["in_model_fit"][str(B)]
    # Both methods' leave-one-out errors, or none where the op sums were too close for a slope (then common).
    assert set(fit["loo_error"]) == {"common", "per-kind"} or (fit["method"], fit["loo_error"]) == ("common", {})
    assert fit["method"] in ("common", "per-kind")
    assert len(meta["model_overhead"][str(B)]) == REFERENCE_SAMPLES + 1  # the smallest arch and the drawn ones


@pytest.mark.slow
def test_validate_reports_on_the_profiled_lut(tiny_lut, tmp_path):
    path, lut, _ = tiny_lut
    report = validate_lut(lut, get_space("dlrm-tiny"), samples=3, batch_size=B, seed=1)
    assert report["samples"] == 3 and report["backend"] == "torch" and report["batch_size"] == B
    for key in ("median_abs_error_pct", "within_10pct", "spearman", "worst", "archs"):
        assert key in report
    assert 0 <= report["within_10pct"] <= 1 and len(report["archs"]) == 3
    worst = report["worst"][0]
    assert set(worst["breakdown"]["parts_us"]) == {"bottom", "emb", "interaction", "top", "overhead"}
    assert all(a["measured_ms"] > 0 and a["predicted_ms"] > 0 for a in report["archs"])
    drift = report["host_drift"]  # the profile's reference models timed again
    assert drift["references"] == REFERENCE_SAMPLES + 1 and drift["pct"] == pytest.approx((drift["ratio"] - 1) * 100)
    assert 0.5 < drift["ratio"] < 2 and drift["net"]["samples"] == 3
    code, out = run("lut", "validate", path, "--space", "dlrm-tiny", "--samples", 2, "--batch-size", B,
                    "--out", tmp_path / "report.json")
    assert code == 0 and "within 10%" in out and "reference models run" in out and (tmp_path / "report.json").is_file(), out


@pytest.mark.slow
def test_host_drift_is_the_median_ratio_of_the_references_now_to_their_profile(tiny_lut, monkeypatch):
    """Timed again at 1.3x their recorded latencies, the references give a drift of +30%; a LUT whose
    records are not this space's references (another count or other features) gives none."""
    import copy

    from dnas_hw.timing import TimingStats
    from profiler import drift as drift_module

    _, lut, _ = tiny_lut
    space = get_space("dlrm-tiny")
    recorded = iter([r["whole_us"] for r in lut.meta["model_overhead"][str(B)]])

    def timed_again(archs, **options):
        return [{B: TimingStats(*(1.3 * next(recorded),) * 3, repeats=7)} for _ in archs]

    monkeypatch.setattr(drift_module, "time_archs", timed_again)
    drift = drift_module.host_drift(lut, space, [B])
    assert drift[B]["ratio"] == pytest.approx(1.3) and drift[B]["pct"] == pytest.approx(30.0)
    other = copy.deepcopy(lut)
    other.meta["model_overhead"][str(B)][3]["features"]["ops"] += 1
    assert drift_module.host_drift(other, space, [B]) == {}
    other.meta["model_overhead"][str(B)] = other.meta["model_overhead"][str(B)][:-1]
    assert drift_module.host_drift(other, space, [B]) == {}


@pytest.mark.slow
def test_validate_refuses_a_lut_missing_rows_before_timing(tiny_lut):
    _, lut, _ = tiny_lut
    with pytest.raises(UserError, match="no row for"):
        validate_lut(lut, get_space("dlrm-tiny"), samples=2, batch_size=B + 1)


def _subprocess_profile(space_file: Path, out: Path, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dnas_hw.app.cli", "profile", "--space", str(space_file), "--backend", "torch",
           "--batch-size", "2", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_killed_profile_resumes_without_remeasuring_finished_keys(tmp_path):
    space_file = tmp_path / "small.toml"
    space_file.write_text(SMALL_SPACE)
    out = tmp_path / "small.csv"
    partial = PartialFile(partial_path(out))
    proc = _subprocess_profile(space_file, out)
    deadline = time.time() + 120
    while len(partial.read()) < BLOCK_OPS and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = partial.read()
    ops = len(space_calls(get_space(str(space_file))))
    assert ops > BLOCK_OPS and len(kept) == BLOCK_OPS, "killed before the first block or after the second"
    assert not out.exists()

    proc = _subprocess_profile(space_file, out, "--resume")
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    total = len(all_keys(get_space(str(space_file)), [2]))
    assert f"= {total} keys; {total - len(kept)} to measure" in stdout
    rows = Lut.load(out).rows.to_dict("records")
    assert len(rows) == total
    by_key = {(r["op"], r["params"], r["batch_size"]): r for r in rows}
    for r in kept:  # the same measurement, not a new one: every figure unchanged
        assert by_key[(r["op"], r["params"], r["batch_size"])] == pytest.approx(r)
    assert not partial.path.exists()


@pytest.mark.slow
def test_resume_refuses_rows_of_another_target(tmp_path, tiny_lut):
    path, _, _ = tiny_lut
    out = tmp_path / "tiny.csv"
    Lut.load(path).save(out)
    with pytest.raises(UserError, match="backend=torch, this profile has backend=onnxruntime"):
        profile_to_lut(get_space("dlrm-tiny"), out, backend="onnxruntime", device="cpu", threads=1,
                       batch_sizes=[B], resume=True)


@pytest.mark.slow
def test_resume_of_a_complete_lut_measures_nothing(tmp_path, tiny_lut, capsys):
    path, lut, _ = tiny_lut
    out = tmp_path / "tiny.csv"
    lut.save(out)
    again = profile_to_lut(get_space("dlrm-tiny"), out, backend="torch", device="cpu", threads=1,
                           batch_sizes=[B], resume=True)
    assert "; 0 to measure" in capsys.readouterr().out
    assert again.rows.equals(lut.rows)


@pytest.mark.parametrize("args, needle", [
    (("--space", "nope"), "unknown space"),
    (("--space", "dlrm-tiny", "--data", "/nonexistent/dir"), "/nonexistent/dir"),
])
def test_bad_profile_input_is_one_clear_error(tmp_path, args, needle):
    code, out = run("profile", *args, "--backend", "torch", "--batch-size", "2", "--out", tmp_path / "x.csv")
    last_error_line(code, out, needle)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    code, out = run("profile", "--space", "dlrm-tiny", "--backend", "torch", "--device", "cuda",
                    "--batch-size", "2", "--out", tmp_path / "x.csv")
    last_error_line(code, out, "no CUDA device")


def test_op_inputs_are_spread_ids_as_strided_columns_and_hot_activations():
    space = get_space("dlrm-tiny")
    emb = next(c for c in space_calls(space) if c.op == "embedding" and c.params["num_embeddings"] >= 100)
    pool = op_input_pool(emb, 4, num_sparse=26)
    ids = torch.cat([inputs[0] for inputs in pool])
    rows = emb.params["num_embeddings"]
    assert pool[0][0].stride() == (26,)  # a column of [B, 26], as SparseArch hands it over
    assert ids.min() >= 0 and ids.max() < rows
    assert len(set(ids[:rows].tolist())) == rows  # no repeat before every row was used
    linear = next(c for c in space_calls(space) if c.op == "linear")
    hot = op_input_pool(linear, 4, num_sparse=26)
    assert len(hot) == 2 and all(x[0].abs().sum() > 0 for x in hot)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@gpu
def test_cuda_profile_and_validate_on_torch(tmp_path):
    space = get_space("dlrm-tiny")
    lut = profile_to_lut(space, tmp_path / "cuda.csv", backend="torch", device="cuda", threads=1, batch_sizes=[B])
    assert lut.meta["device"] == "cuda" and lut.meta["clock"] == "cuda-events"
    report = validate_lut(lut, space, samples=2, batch_size=B)
    assert report["device"] == "cuda" and report["samples"] == 2


@gpu
def test_cuda_onnxruntime_op_timing_where_the_provider_exists():
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider here")
    space = get_space("dlrm-tiny")
    call = space_calls(space)[-1]
    stats = op_timer("onnxruntime", "cuda", 1, rounds=1).measure(call, [B], space.num_sparse)
    assert stats[B].repeats > 0 and math.isfinite(stats[B].p50_us)
