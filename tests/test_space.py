"""Search spaces: slots, sampled archs covered by `op_calls()`, TOML user spaces, extremes."""

from __future__ import annotations

import random

import pytest

from dnas_hw.dlrm.arch import dlrm_kaggle_reference
from dnas_hw.dlrm.space import SearchSpace, builtin_spaces
from dnas_hw.errors import UserError
from dnas_hw.space import SpaceError, get_space

CARDS = tuple(50 + 13 * f for f in range(26))


def spaces() -> list[SearchSpace]:
    return [
        get_space("dlrm-tiny"),
        get_space("dlrm-kaggle", cardinalities=CARDS),
        SearchSpace(name="fixed-depth", cardinalities=(100, 7, 30), bottom_widths=(8, 32), bottom_layers=2,
                    top_widths=(16,), top_layers=1, emb_dims=(2, 8), emb_row_fractions=(1.0, 0.3),
                    interaction_dims=(4, 8), elastic_depth=False),
    ]


@pytest.mark.parametrize("space", spaces(), ids=lambda s: s.name)
def test_sampled_archs_are_built_from_op_calls(space):
    calls = space.op_calls()
    rng = random.Random(0)
    for arch in [space.sample(rng) for _ in range(40)] + [space.largest(), space.smallest()]:
        used = {c for _, c in arch.ops().named()}
        assert used <= calls, sorted(map(str, used - calls))[:3]


@pytest.mark.parametrize("space", spaces(), ids=lambda s: s.name)
def test_largest_and_smallest_bound_every_sample(space):
    big, small = space.largest(), space.smallest()
    assert len(big.bottom_mlp) == space.bottom_layers + 1 and len(big.top_mlp) == space.top_layers
    assert big.interaction_dim == max(space.interaction_dims)
    assert big.emb_dims == (min(max(space.emb_dims), big.interaction_dim),) * space.num_sparse
    assert big.emb_rows == tuple(max(space.rows_choices(f)) for f in range(space.num_sparse))
    assert small.emb_rows == tuple(min(space.rows_choices(f)) for f in range(space.num_sparse))
    rng = random.Random(1)
    for arch in (space.sample(rng) for _ in range(40)):
        assert small.num_params() <= arch.num_params() <= big.num_params()
        assert small.flops(64) <= arch.flops(64) <= big.flops(64)


def test_slots_and_choices():
    space = get_space("dlrm-tiny")
    slots = {s.name: s.choices for s in space.slots()}
    assert slots["bottom.0"] == (8, 16) and slots["bottom_depth"] == (0, 1, 2)
    assert slots["interaction"] == ("dot", "cat") and slots["interaction_dim"] == (2, 4)
    assert slots["emb_rows.1"] == (17, 9)  # ceil(17 * 0.5), largest first
    assert len(slots) == 2 + 1 + 26 + 26 + 2 + 2 + 1


def test_arch_keeps_the_leading_layers_and_caps_dims_at_the_interaction_width():
    space = get_space("dlrm-tiny")
    choices = space.sample_choices(random.Random(3))
    choices.update({"bottom.0": 16, "bottom.1": 8, "bottom_depth": 1, "top.0": 8, "top.1": 16, "top_depth": 2,
                    "interaction": "cat", "interaction_dim": 2, "emb_dim.0": 4, "emb_dim.1": 2})
    arch = space.arch(choices)
    assert arch.bottom_mlp == (16, 2) and arch.top_mlp == (8, 16)
    assert arch.emb_dims[:2] == (2, 2) and arch.interaction_dim == 2
    del choices["top.0"]
    choices["top.7"] = 8
    with pytest.raises(SpaceError, match="top.0.*top.7"):
        space.arch(choices)


def test_the_dlrm_reference_is_an_arch_of_the_default_space():
    space = get_space("dlrm-kaggle", cardinalities=CARDS)
    reference = dlrm_kaggle_reference(CARDS)
    choices = space.choices_of(reference)
    assert space.arch(choices) == reference
    assert {c for _, c in reference.ops().named()} <= space.op_calls()
    assert (choices["bottom_depth"], choices["top_depth"], choices["interaction_dim"]) == (3, 2, 16)


@pytest.mark.parametrize("space", spaces(), ids=lambda s: s.name)
def test_choices_of_inverts_arch(space):
    rng = random.Random(5)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.arch(space.choices_of(arch)) == arch


def test_choices_of_names_what_the_space_lacks():
    space = get_space("dlrm-kaggle", cardinalities=CARDS)
    reference = dlrm_kaggle_reference(CARDS)
    with pytest.raises(SpaceError, match="interaction width 24"):
        space.choices_of(dlrm_kaggle_reference(CARDS, dim=24))
    with pytest.raises(SpaceError, match="bottom MLP"):
        space.choices_of(type(reference)(**{**reference.to_dict(), "bottom_mlp": [100, 16]}))


def test_builtin_names_and_unknown_name():
    assert {"dlrm-kaggle", "dlrm-tiny"} <= set(builtin_spaces())
    with pytest.raises(UserError, match="dlrm-huge"):
        get_space("dlrm-huge")


def test_bind_changes_row_choices_and_fingerprint():
    space = get_space("dlrm-tiny")
    bound = space.bind([1000] * 26)
    assert bound.rows_choices(0) == (1000, 500)
    assert bound.fingerprint() != space.fingerprint()
    assert get_space("dlrm-tiny").fingerprint() == space.fingerprint()


def test_toml_user_space(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('cardinalities = [100, 40]\nbottom_widths = [8]\nbottom_layers = 1\n'
                    'top_widths = [4]\ntop_layers = 1\nemb_dims = [2, 4]\ninteractions = ["dot"]\n')
    space = get_space(str(path))
    assert space.cardinalities == (100, 40) and space.interaction_dims == (16, 32, 64)
    assert space.largest().ops().interaction.params == {"num_sparse": 2, "dim": 64}


@pytest.mark.parametrize(
    "text, key",
    [
        ("bottom_width = [8]\n", "bottom_width"),
        ("emb_dims = [0, 4]\n", "emb_dims"),
        ("emb_row_fractions = [1.5]\n", "emb_row_fractions"),
        ('interactions = ["dot", "attention"]\n', "attention"),
        ("top_layers = -1\n", "top_layers"),
        ('elastic_depth = "yes"\n', "elastic_depth"),
        ("skip = true\n", "skip"),
        ("bottom_widths = [1000000000]\n", "bottom_widths"),
        ("cardinalities = [1000000000000]\n", "cardinalities"),
        ("top_layers = 1000000\n", "top_layers"),
        ("interaction_dims = [0]\n", "interaction_dims"),
        ("cardinalities = []\n", "cardinalities"),
    ],
)
def test_toml_bad_key_or_value_names_it(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=key):
        get_space(str(path))


def test_toml_unreadable(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        get_space(str(tmp_path / "missing.toml"))
    (tmp_path / "broken.toml").write_text("bottom_widths = [8\n")
    with pytest.raises(SpaceError, match="not valid TOML"):
        get_space(str(tmp_path / "broken.toml"))


@pytest.mark.parametrize("space", spaces(), ids=lambda s: s.name)
def test_extremes_pick_the_interaction_by_cost(space):
    # With no hidden layers, `cat` (a concatenation into one small logit layer) can cost
    # fewer FLOPs than `dot` (a Gram matrix) even where its output is wider.
    others = [s for s in space.slots() if s.name != "interaction"]
    widest = {s.name: max(s.choices) for s in others}
    narrowest = {s.name: min(s.choices) for s in others}
    for kind in space.interactions:
        assert space.largest().flops(64) >= space.arch({**widest, "interaction": kind}).flops(64)
        assert space.smallest().flops(64) <= space.arch({**narrowest, "interaction": kind}).flops(64)
