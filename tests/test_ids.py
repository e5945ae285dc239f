"""Ids as served: where timed lookups get their ids, and a LUT that knows its own (dnas_hw.data.ids)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cli_checks import last_error_line, one_error_line, run
from dnas_hw.data.folder import PreparedData
from dnas_hw.data.ids import IdSource, data_source, id_source
from dnas_hw.data.synth import SynthOptions, synth
from dnas_hw.dlrm.space import SearchSpace
from dnas_hw.errors import UserError
from dnas_hw.inputs import dlrm_input_pool, pool_sets
from dnas_hw.space import get_space
from lut.table import Lut, LutError, merge
from profiler.keys import space_calls, table_features
from profiler.timers import op_input_pool

B = 4


def test_ids_come_from_the_data_when_there_is_data_else_spread(synth_dir):
    assert id_source(None, None) == IdSource() and IdSource().kind == "spread"
    source = id_source(None, synth_dir)
    assert source.kind == "data" and source.split == "train"
    assert source.rows == len(PreparedData.open(synth_dir).split("train")) and source.path == str(synth_dir.resolve())
    assert source.describe() == f"data:{synth_dir.resolve()} split train, {source.rows:,} rows"
    assert id_source("spread", synth_dir) == IdSource()
    with pytest.raises(UserError, match="--ids data needs --data"):
        id_source("data", None)


def test_a_copied_folder_is_the_same_source_other_data_is_not(synth_dir, tmp_path):
    a, copy = data_source(synth_dir), data_source(shutil.copytree(synth_dir, tmp_path / "copy"))
    assert a.path != copy.path and a.same_as(copy)
    synth(tmp_path / "other", SynthOptions(rows=1000, seed=1))
    assert not a.same_as(data_source(tmp_path / "other"))
    assert not a.same_as(IdSource()) and not IdSource().same_as(a) and IdSource().same_as(IdSource())
    assert IdSource.from_meta(a.to_meta(), "m") == a and IdSource.from_meta(None, "m") == IdSource()
    for bad in ({"kind": "zipf"}, {"kind": "data", "path": "x"}, [1]):
        with pytest.raises(UserError, match="m: ids"):
            IdSource.from_meta(bad, "m")


def test_a_window_is_consecutive_rows_of_the_split_from_a_seeded_start_wrapping_around(synth_dir):
    source, train = data_source(synth_dir), PreparedData.open(synth_dir).split("train")
    n = len(train)
    dense, sparse = source.window(n + 7, seed=3)
    assert dense.dtype == np.float32 and sparse.dtype == np.int64 and sparse.shape == (n + 7, 26)
    starts = [s for s in range(n) if (train.sparse[s] == sparse[0]).all()]
    start = next(s for s in starts if (train.sparse[(s + np.arange(n)) % n] == sparse[:n]).all())
    assert (sparse[n:] == sparse[:7]).all()  # round the split again
    assert np.array_equal(dense[:n], train.dense[(start + np.arange(n)) % n])
    again = source.window(n + 7, seed=3)
    assert np.array_equal(again[1], sparse) and not np.array_equal(source.window(50, seed=4)[1], sparse[:50])
    with pytest.raises(UserError, match="26 sparse features, the model takes 5"):
        source.window(8, 0, num_sparse=5)


def test_model_pools_replay_the_data_and_op_pools_the_column_of_the_tables_feature(synth_dir):
    source = data_source(synth_dir)
    cards = PreparedData.open(synth_dir).cardinalities
    pool = dlrm_input_pool(13, cards, B, n=8, seed=5, ids=source)
    dense, sparse = source.window(8 * B, seed=5)
    assert torch.equal(torch.cat([s for _, s in pool]), torch.from_numpy(sparse))
    assert torch.equal(torch.cat([d for d, _ in pool]), torch.from_numpy(dense))

    space = get_space("dlrm-tiny", cards)
    features = table_features(space)
    largest = int(np.argmax(cards))
    rows = space.rows_choices(largest)[0]
    assert features[rows] == largest
    emb = space.embedding_op(rows, 2, 2)
    ops = op_input_pool(emb, B, 26, seed=7, ids=source, feature=largest)
    ids = torch.cat([inputs[0] for inputs in ops])
    assert ops[0][0].stride() == (26,)  # a column of [B, 26], as the model hands it over
    assert torch.equal(ids, torch.from_numpy(source.window(pool_sets(B) * B, seed=7)[1][:, largest]))
    with pytest.raises(ValueError, match="the feature the table serves"):
        op_input_pool(emb, B, 26, ids=source)


def test_a_table_size_offered_by_several_features_replays_the_largest_ones_ids():
    space = SearchSpace(name="t", cardinalities=(10, 40, 40, 7), emb_row_fractions=(1.0, 0.25))
    # Tables: feature 0 -> 10, 3; features 1 and 2 -> 40, 10; feature 3 -> 7, 2.
    assert table_features(space) == {40: 1, 10: 1, 3: 0, 7: 3, 2: 3}


# ----------------------------------------------------------------- a real profile with data ids

SPACE = """
cardinalities = [{cards}]
bottom_widths = [2]
bottom_layers = 1
top_widths = [2]
top_layers = 1
emb_dims = [2]
emb_row_fractions = [1.0]
interactions = ["dot"]
elastic_depth = false
interaction_dims = [2]
"""


@pytest.fixture(scope="module")
def data_lut(synth_dir, tmp_path_factory, one_torch_thread):
    """A small space bound to `synth_dir`, profiled on onnxruntime with its ids; what each op pool was given."""
    import profiler.timers

    folder = tmp_path_factory.mktemp("ids")
    space_file = folder / "space.toml"
    space_file.write_text(SPACE.format(cards=", ".join(map(str, PreparedData.open(synth_dir).cardinalities))))
    real = profiler.timers.op_input_pool
    seen = []

    def spy(call, batch_size, num_sparse, seed=0, ids=None, feature=None):
        seen.append((call, ids, feature))
        return real(call, batch_size, num_sparse, seed, ids, feature)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(profiler.timers, "op_input_pool", spy)
        code, out = run("profile", "--space", space_file, "--data", synth_dir, "--backend", "onnxruntime",
                        "--batch-size", B, "--out", folder / "lut.csv")
    assert code == 0, out
    return folder, space_file, seen, out


@pytest.mark.slow
def test_a_profile_with_data_replays_each_tables_feature_and_records_the_source(data_lut, synth_dir):
    folder, space_file, seen, out = data_lut
    source = data_source(synth_dir)
    space = get_space(str(space_file), PreparedData.open(synth_dir).cardinalities)
    features = table_features(space)
    lookups = [(c, ids, f) for c, ids, f in seen if c.op == "embedding" and ids is not None]
    assert {c for c, _, _ in lookups} == {c for c in space_calls(space) if c.op == "embedding"}
    assert all(ids == source and f == features[c.params["num_embeddings"]] for c, ids, f in lookups)
    assert f"ids {source.describe()}" in out
    lut = Lut.load(folder / "lut.csv")
    assert lut.meta["ids"] == source.to_meta() and lut.id_source == source
    code, shown = run("lut", "show", folder / "lut.csv")
    assert code == 0 and f"  ids       {source.describe()}" in shown, shown
    for ref in lut.meta["model_overhead"][str(B)]:  # what a search's budget margin is derived from
        assert ref["whole_p90_us"] >= ref["whole_us"] > 0 and ref["loo_predicted_us"] > 0


@pytest.mark.slow
def test_a_lut_of_data_ids_is_refused_against_spread_ids_and_validated_with_its_data(data_lut, synth_dir, tmp_path):
    folder, space_file, _, _ = data_lut
    lut_path = folder / "lut.csv"
    common = ["lut", "validate", lut_path, "--space", space_file, "--samples", 2, "--batch-size", B]
    one_error_line(*run(*common, "--data", synth_dir, "--ids", "spread", "--out", tmp_path / "a.json"),
                   f"but these lookups replay spread (over each table, no repeats: the worst case): the comparison "
                   f"would measure the ids, not the LUT (use --data {synth_dir.resolve()}, or --force)")
    assert not (tmp_path / "a.json").exists()
    synth(tmp_path / "other", SynthOptions(rows=1000, seed=1))  # same features, other rows
    one_error_line(*run(*common, "--data", tmp_path / "other", "--out", tmp_path / "b.json"), "profiled with ids data:")
    code, out = run(*common, "--data", synth_dir, "--out", tmp_path / "c.json")
    assert code == 0, out
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["ids"] == report["lut_ids"] == data_source(synth_dir).describe()
    code, out = run(*common, "--data", synth_dir, "--ids", "spread", "--force", "--out", tmp_path / "d.json")
    assert code == 0 and "warning:" in out, out
    assert json.loads((tmp_path / "d.json").read_text())["ids"].startswith("spread")


@pytest.mark.slow
def test_resume_and_merge_refuse_rows_of_other_ids(data_lut, synth_dir, tmp_path):
    folder, space_file, _, _ = data_lut
    out = tmp_path / "lut.csv"
    shutil.copy(folder / "lut.csv", out)
    shutil.copy(folder / "lut.meta.json", tmp_path / "lut.meta.json")
    last_error_line(*run("profile", "--space", space_file, "--data", synth_dir, "--ids", "spread", "--backend",
                         "onnxruntime", "--batch-size", B, "--out", out, "--resume"), "profiled with ids data:")
    lut = Lut.load(out)
    spread = Lut(lut.rows.assign(batch_size=B + 1), {k: v for k, v in lut.meta.items() if k != "ids"}, "spread.csv")
    with pytest.raises(LutError, match="cannot merge spread.csv \\(ids spread"):
        merge([lut, spread])
