"""The search engine on a second family: DCN-v2's supernet, cost table and extremes (examples/dcn/supernet.py).

`examples.dcn` is imported by a fixture, not at collection (see tests/test_dcn.py).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dnas_hw.errors import UserError
from dnas_hw.family import ModelFamily, get_family
from dnas_hw.space import get_space
from lut.predict import predict
from search.cost import expected_cost
from search.extremes import extreme_arch
from search.family_search import family_search, latency_table
from search.hooks import register_search
from search.layout import Layout
from search_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    assert_one_hot_expected_latency_equals_predict,
    assert_one_hot_supernet_equals_extracted,
    assert_per_sample_masks_give_each_sample_its_arch,
    one_thread,
    random_batch,
    toy_lut,
    trained_like,
)

B = 16


def test_the_dcn_family_is_searchable_through_its_registration(dcn, dcn_tiny):
    hook = family_search(dcn_tiny)
    assert hook is family_search(get_family("dcn")) and hook.supernet.__module__ == "examples.dcn.supernet"


def test_each_family_registers_its_hook_where_it_is_defined(dcn):
    import search.dlrm
    from dnas_hw.dlrm import SearchSpace
    from search.dlrm.supernet import Supernet

    assert family_search(get_space("dlrm-tiny")) is search.dlrm.SEARCH and search.dlrm.SEARCH.supernet is Supernet
    assert family_search(get_family("dcn")) is dcn.SEARCH
    with pytest.raises(ValueError, match="'dlrm' already has a search hook"):
        register_search("dlrm", supernet=Supernet, cost_table=None, extract=None)
    assert family_search(SearchSpace("s", (5, 5))) is search.dlrm.SEARCH


def test_a_family_without_a_search_hook_is_refused_in_one_line(dcn):
    bare = ModelFamily("bare", dcn.DCNArch, dcn.build_dcn, dcn.DCNSpace, dcn.DCNSpace.from_dict, {})
    with pytest.raises(UserError, match="'bare' is not searchable") as e:
        family_search(bare)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("path", ["masked", "single-path"])
def test_one_hot_dcn_supernet_equals_the_standalone_dcn(dcn_tiny, path):
    """Masked mixture (probabilities with a gradient) and single-path fast path, over sampled archs:
    hashed tables, dim masks, skipped and low-rank cross layers, skipped deep layers."""
    hook = family_search(dcn_tiny)
    net = trained_like(hook.supernet(dcn_tiny), 1)
    drawn = assert_one_hot_supernet_equals_extracted(net, dcn_tiny, hook.extract, path == "masked", 8)
    seen_skips = {s for choices in drawn for s, c in choices.items() if c == "skip"}
    assert any(s.startswith("cross") for s in seen_skips) and any(s.startswith("deep") for s in seen_skips)


def test_per_sample_masks_give_each_sample_its_own_dcn(dcn_tiny):
    hook = family_search(dcn_tiny)
    assert_per_sample_masks_give_each_sample_its_arch(trained_like(hook.supernet(dcn_tiny), 2), dcn_tiny, hook.extract, 6)


def test_arch_gradients_reach_every_dcn_logit_group(dcn_tiny):
    net = family_search(dcn_tiny).supernet(dcn_tiny)
    dense, sparse = random_batch(dcn_tiny, 16)
    net(dense, sparse, net.probabilities()).sum().backward()
    for g, t in net.arch_logits.items():
        assert t.grad is not None and t.grad[torch.isfinite(t)].abs().sum() > 0, g


def test_one_hot_expected_latency_equals_predict_for_dcn(dcn_tiny):
    assert_one_hot_expected_latency_equals_predict(dcn_tiny, B)


@pytest.mark.slow
def test_expected_latency_is_the_mean_over_sampled_dcn_archs(dcn_tiny):
    """Away from one-hot: E[lat] under the probabilities equals the enumeration-free Monte Carlo mean."""
    lut, layout = toy_lut(dcn_tiny, B), Layout(dcn_tiny)
    table = latency_table(dcn_tiny, lut, B)
    g = torch.Generator().manual_seed(0)
    logits = {k: torch.randn(v.shape, generator=g, dtype=torch.float64).masked_fill(~grp.valid(), float("-inf"))
              for (k, grp), v in zip(layout.groups.items(), layout.init_logits().values())}
    probs = {k: torch.softmax(t, -1) for k, t in logits.items()}
    draws = []
    for _ in range(3000):
        idx = {k: torch.multinomial(p, 1, generator=g)[:, 0] for k, p in probs.items()}
        draws.append(float(expected_cost(table, layout.one_hot(layout.choices(idx)))))
    mean, sem = torch.tensor(draws).mean().item(), torch.tensor(draws).std().item() / len(draws) ** 0.5
    assert abs(float(expected_cost(table, probs)) - mean) < 5 * sem


def test_dcn_extreme_archs_match_exhaustive_enumeration(dcn):
    space = dcn.DCNSpace(name="enum", cardinalities=(40, 9), num_dense=3, emb_dims=(2, 4), emb_row_fractions=(1.0, 0.25),
                         cross_layers=2, cross_ranks=(1, 2), deep_layers=2, deep_widths=(4, 8))
    lut, layout = toy_lut(space, B), Layout(space)
    table = latency_table(space, lut, B)
    slots = space.slots()
    prices = [predict(lut, space.arch(dict(zip([s.name for s in slots], combo))), B).total_us
              for combo in itertools.product(*(s.choices for s in slots))]
    for cheapest, want in ((True, min(prices)), (False, max(prices))):
        value, choices = extreme_arch(table, layout, cheapest=cheapest)
        assert value == pytest.approx(want)
        assert predict(lut, space.arch(choices), B).total_us == pytest.approx(want)
