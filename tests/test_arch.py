"""`Arch`: validation that names the field, the JSON form, and the ops it is built from."""

from __future__ import annotations

import json

import pytest

from dnas_hw.dlrm.arch import Arch, ArchError, dlrm_kaggle_reference
from dnas_hw.errors import UserError


def tiny(**overrides) -> dict:
    d = {
        "num_dense": 3,
        "bottom_mlp": [8, 4],
        "emb_dims": [4, 2, 4],
        "emb_rows": [10, 20, 5],
        "interaction": "dot",
        "top_mlp": [6],
    }
    d.update(overrides)
    return d


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"emb_rows": [10, 20]}, "emb_rows"),
        ({"emb_dims": []}, "emb_dims"),
        ({"bottom_mlp": []}, "bottom_mlp"),
        ({"num_dense": 0}, "num_dense"),
        ({"num_dense": True}, "num_dense"),
        ({"bottom_mlp": [8, -4]}, "bottom_mlp[1]"),
        ({"top_mlp": [0]}, "top_mlp[0]"),
        ({"emb_rows": [10, 0, 5]}, "emb_rows[1]"),
        ({"emb_dims": [4, 2.5, 4]}, "emb_dims[1]"),
        ({"emb_dims": [4, 8, 4]}, "emb_dims[1]"),  # wider than the interaction width 4
        ({"interaction": "attention"}, "interaction"),
        ({"interaction": 3}, "interaction"),
        ({"top_mlp": "6"}, "top_mlp"),
    ],
)
def test_invalid_arch_names_the_field(overrides, field):
    with pytest.raises(ArchError) as err:
        Arch.from_dict(tiny(**overrides))
    assert field in str(err.value)
    assert isinstance(err.value, UserError)


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ArchError, match="bottom_mpl"):
        Arch.from_dict({**tiny(), "bottom_mpl": [1]})
    d = tiny()
    del d["emb_rows"]
    with pytest.raises(ArchError, match="missing.*emb_rows"):
        Arch.from_dict(d)
    with pytest.raises(ArchError, match="JSON object"):
        Arch.from_dict([1, 2])


def test_json_round_trip(tmp_path):
    arch = Arch.from_dict(tiny())
    assert Arch.from_dict(json.loads(arch.to_json())) == arch
    assert json.loads(arch.to_json()) == tiny()
    arch.save(tmp_path / "arch.json")
    assert Arch.load(tmp_path / "arch.json") == arch
    assert [p.name for p in tmp_path.iterdir()] == ["arch.json"]  # no temporary left behind


def test_load_reports_the_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Arch.load(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json.*not valid JSON"):
        Arch.load(tmp_path / "broken.json")
    (tmp_path / "bad.json").write_text(json.dumps(tiny(interaction="nope")))
    with pytest.raises(ArchError, match="bad.json.*interaction"):
        Arch.load(tmp_path / "bad.json")


def test_ops_follow_the_model_rules():
    arch = Arch.from_dict(tiny())
    ops = arch.ops()
    assert [(c.params["in_features"], c.params["out_features"]) for c in ops.bottom] == [(3, 8), (8, 4)]
    assert [c.params for c in ops.embeddings] == [
        {"num_embeddings": 10, "embedding_dim": 4, "pad_to": 4},
        {"num_embeddings": 20, "embedding_dim": 2, "pad_to": 4},
        {"num_embeddings": 5, "embedding_dim": 4, "pad_to": 4},
    ]
    assert ops.interaction.op == "interaction_dot" and ops.interaction.params == {"num_sparse": 3, "dim": 4}
    # Top MLP input: D + (F+1)F/2 = 4 + 6 = 10; then the implicit 1-logit layer without activation.
    assert [(c.params["in_features"], c.params["out_features"], c.params["activation"]) for c in ops.top] == [
        (10, 6, "relu"),
        (6, 1, "none"),
    ]
    names = [n for n, _ in ops.named()]
    assert names == ["bottom.0", "bottom.1", "emb.0", "emb.1", "emb.2", "interaction", "top.0", "top.out"]


def test_cat_without_top_hidden_layers():
    ops = Arch.from_dict(tiny(interaction="cat", top_mlp=[])).ops()
    assert ops.top[0].params == {"in_features": 4 * 4, "out_features": 1, "activation": "none"}


def test_counts():
    arch = Arch.from_dict(tiny())
    linear = (3 + 1) * 8 + (8 + 1) * 4 + (10 + 1) * 6 + (6 + 1) * 1
    tables = 10 * 4 + 20 * 2 + 5 * 4
    assert arch.num_params() == linear + tables
    assert arch.embedding_bytes() == tables * 4
    b = 2
    gemm = 2 * b * (3 * 8 + 8 * 4 + 10 * 6 + 6 * 1)
    assert arch.flops(b) == gemm + 2 * b * 4 * 4 * 4  # dot: (F+1)^2 D multiply-adds


def test_check_data_names_the_mismatch():
    arch = Arch.from_dict(tiny())
    arch.check_data(3, 3)
    with pytest.raises(ArchError, match="3 embedding tables.*26 categorical"):
        arch.check_data(3, 26)
    with pytest.raises(ArchError, match="num_dense = 3.*13 dense"):
        arch.check_data(13, 3)


def test_kaggle_reference():
    arch = dlrm_kaggle_reference([100] * 26)
    assert arch.bottom_mlp == (512, 256, 64, 16) and arch.top_mlp == (512, 256)
    assert arch.emb_dims == (16,) * 26 and arch.interaction == "dot" and arch.num_dense == 13
    assert arch.ops().top[0].params["in_features"] == 16 + 27 * 26 // 2
