"""Mixed ops and the supernet: one-hot masks compute exactly the standalone derived model."""

from __future__ import annotations

import random

import pytest
import torch

from dnas_hw.space import get_space
from search.dlrm.supernet import Supernet, extract_model
from search.gumbel import gumbel_softmax
from search_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    assert_one_hot_supernet_equals_extracted,
    assert_per_sample_masks_give_each_sample_its_arch,
    one_thread,
    random_batch,
    tiny_space,
    trained_like,
)


SMALL_KAGGLE = get_space("dlrm-kaggle", cardinalities=[50 + 13 * f for f in range(26)])


@pytest.mark.parametrize("path", ["masked", "single-path"])
@pytest.mark.parametrize("space", [tiny_space(), SMALL_KAGGLE], ids=lambda s: s.name)
def test_one_hot_supernet_equals_standalone_model(space, path):
    """Both the masked mixture (probabilities that carry a gradient) and the single-path fast path."""
    assert_one_hot_supernet_equals_extracted(trained_like(Supernet(space), 1), space, extract_model, path == "masked", 6)


@pytest.mark.parametrize("path", ["masked", "single-path"])
def test_every_kind_width_and_depth_corner_reads_its_own_columns(path):
    """Each interaction kind at each width D, with no or every hidden layer kept: the supernet at those
    choices is the extracted model (the top MLP's first reader takes the kind's canonical columns)."""
    space = tiny_space()
    net = trained_like(Supernet(space), 3)
    dense, sparse = random_batch(space, 16)
    base = space.sample_choices(random.Random(7))
    for kind in space.interactions:
        for d in space.interaction_dims:
            for bottom, top in [(0, 0), (0, space.top_layers), (space.bottom_layers, 0), (space.bottom_layers, space.top_layers)]:
                choices = {**base, "interaction": kind, "interaction_dim": d, "bottom_depth": bottom, "top_depth": top}
                probs = {g: t.float().requires_grad_(path == "masked") for g, t in net.layout.one_hot(choices).items()}
                want = extract_model(net, choices)(dense, sparse).detach()
                torch.testing.assert_close(net(dense, sparse, probs), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_per_sample_masks_give_each_sample_its_own_arch():
    space = tiny_space()
    assert_per_sample_masks_give_each_sample_its_arch(trained_like(Supernet(space), 2), space, extract_model, 8)


def test_gumbel_samples():
    logits = torch.tensor([[0.0, 1.0, float("-inf")], [2.0, 0.0, -1.0]])
    soft = gumbel_softmax(logits, 1.0, hard=False, samples=None, generator=torch.Generator().manual_seed(0))
    again = gumbel_softmax(logits, 1.0, hard=False, samples=None, generator=torch.Generator().manual_seed(0))
    assert torch.equal(soft, again)
    torch.testing.assert_close(soft.sum(-1), torch.ones(2))
    assert soft[0, 2] == 0  # a padded choice is never drawn
    hard = gumbel_softmax(logits.requires_grad_(True), 0.5, hard=True, samples=64, generator=torch.Generator().manual_seed(1))
    assert hard.shape == (64, 2, 3)
    one_hot = torch.zeros_like(hard).scatter_(-1, hard.detach().argmax(-1, keepdim=True), 1.0)
    torch.testing.assert_close(hard.detach(), one_hot)  # up to the rounding of one_hot + soft - soft
    (hard[..., 0] * torch.arange(64.0)[:, None]).sum().backward()
    assert logits.grad.abs().sum() > 0  # straight-through: the soft sample's gradient
    # Low temperature concentrates on the argmax of logits + noise; high temperature spreads.
    cold = gumbel_softmax(logits.detach(), 0.05, hard=False, samples=256, generator=torch.Generator().manual_seed(2))
    hot = gumbel_softmax(logits.detach(), 50.0, hard=False, samples=256, generator=torch.Generator().manual_seed(2))
    assert cold.max(-1).values.mean() > 0.95 and hot.max(-1).values.mean() < 0.5


def test_supernet_training_touches_only_sampled_rows_sparsely():
    from dnas_hw.train import split_parameters
    from search.run import WeightsView

    space = tiny_space()
    net = Supernet(space)
    dense_params, sparse_params = split_parameters(WeightsView(net))
    assert sparse_params == [net.embeddings.table.weight]
    assert all(p is not q for p in dense_params for q in net.arch_parameters())
    dense, sparse = random_batch(space, 16)
    probs = {g: torch.softmax(t, -1) for g, t in net.arch_logits.items()}
    net(dense, sparse, probs).sum().backward()
    assert net.embeddings.table.weight.grad.is_sparse


@pytest.mark.parametrize("path", ["masked", "single-path"])
def test_a_supernet_step_is_the_standalone_step_of_the_sampled_arch(path):
    """Fan-in scaling: a candidate starts at its own fan-in's scale and trains at the standalone
    learning rate, so one SGD step on the supernet, then extracting, equals extracting, then one
    SGD step on the standalone model."""
    space = SMALL_KAGGLE
    net = Supernet(space)
    dense, sparse = random_batch(space, 64, seed=5)
    y = torch.rand(64).round()
    choices = {**space.sample_choices(random.Random(7)), "top.0": 128, "top.1": 1024, "bottom.1": 128}
    probs = {g: t.float().requires_grad_(path == "masked") for g, t in net.layout.one_hot(choices).items()}
    model = extract_model(net, choices)
    # A narrow layer behind a wide shared one starts like a standalone layer of its own fan-in.
    for layer in (model.over_arch[0][0], model.over_arch[1][0]):  # fed by the interaction, by a 128-wide layer
        he_std = (2 / layer.in_features) ** 0.5  # He-normal for its own fan-in, not the shared layer's
        assert layer.weight.std().item() == pytest.approx(he_std, rel=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for module, out in ((net, net(dense, sparse, probs)), (model, model(dense, sparse))):
        params = [p for n, p in module.named_parameters() if "arch_logits" not in n]
        loss_fn(out, y).backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.sub_(0.1 * (p.grad.to_dense() if p.grad.is_sparse else p.grad))
    stepped = extract_model(net, choices)
    for (name, got), want in zip(stepped.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("sampling", ["per-batch", "per-sample"])
def test_candidate_logits_are_the_supernet_with_each_interaction_kind(sampling):
    """forward_with_candidates: row k is the supernet with the interaction set to kind k and every
    other choice as sampled; the logits are the supernet's under the sampled probabilities."""
    space = SMALL_KAGGLE
    net = trained_like(Supernet(space), 3)
    dense, sparse = random_batch(space, 16, seed=6)
    g = torch.Generator().manual_seed(0)
    samples = 16 if sampling == "per-sample" else None
    probs = {name: gumbel_softmax(t, 0.5, hard=True, samples=samples, generator=g) for name, t in net.arch_logits.items()}
    probs["interaction"] = probs["interaction"].detach()
    logits, candidates = net.forward_with_candidates(dense, sparse, probs)
    torch.testing.assert_close(logits, net(dense, sparse, probs))
    assert logits.requires_grad and not candidates["interaction"].requires_grad
    assert candidates["interaction"].shape == (len(space.interactions), 16)
    for k in range(len(space.interactions)):
        kind = torch.zeros_like(probs["interaction"])
        kind[..., k] = 1.0
        want = net(dense, sparse, {**probs, "interaction": kind}).detach()
        # fp32 rounding only: a mixture of kinds pads the chosen kind's output to the widest, a different GEMM.
        torch.testing.assert_close(candidates["interaction"][k], want, rtol=1e-4, atol=1e-5)


def test_an_arch_step_takes_the_interaction_gradient_by_enumeration(tmp_path):
    """The interaction logits' task gradient is that of sum_k p_k L_k (p = softmax of the logits,
    L_k = the batch's loss with kind k, the other choices as sampled): p_k (L_k - sum_j p_j L_j).
    Straight-through, it would depend on the sampled kind's output only."""
    from search.config import SearchConfig
    from search.run import Searcher, cost_tables
    from search_fixtures import toy_lut

    space = SMALL_KAGGLE
    config = SearchConfig(enumerate_groups=True)
    search = Searcher(space, cost_tables(space, toy_lut(space, 64), 64, config), 1e9, config,
                      [torch.ones(c) for c in space.cardinalities])
    trained_like(search.net, 4)
    with torch.no_grad():
        search.net.arch_logits["interaction"].copy_(torch.tensor([[0.3, -0.2]]))
    dense, sparse = random_batch(space, 64, seed=7)
    y = torch.rand(64, generator=torch.Generator().manual_seed(8)).round()
    probs = search.sample(64, 0.5, detach=False)
    _, weighted = search.enumerated_loss(dense, sparse, y, probs, 64)
    weighted.backward()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    for k in range(2):
        kind = torch.zeros_like(probs["interaction"])
        kind[..., k] = 1.0
        losses.append(loss_fn(search.net(dense, sparse, {g: t.detach() for g, t in {**probs, "interaction": kind}.items()}), y).item())
    p, L = torch.softmax(torch.tensor([0.3, -0.2]), -1), torch.tensor(losses)
    torch.testing.assert_close(search.net.arch_logits["interaction"].grad[0], p * (L - (p * L).sum()), rtol=1e-4, atol=1e-7)
    assert search.net.arch_logits["top"].grad.abs().sum() > 0  # the other slots keep their straight-through gradient


def test_smaller_tables_inherit_the_count_weighted_hashed_image_of_the_largest():
    from search.mixed import MixedEmbeddings

    emb = MixedEmbeddings(((6, 3, 2),), (2,))
    with torch.no_grad():
        emb.feature_table(0, 6).copy_(torch.arange(12.0).reshape(6, 2))
        before = emb.feature_table(0, 2).clone()
    counts = torch.tensor([1, 0, 0, 3, 0, 0])  # ids 0 and 3 seen; 1, 2, 4, 5 never
    emb.inherit_from_largest([counts])
    # rows = 3: bucket 0 <- ids 0 (x1) and 3 (x3); buckets 1 and 2 reached by no seen id keep their values
    torch.testing.assert_close(emb.feature_table(0, 3)[0], (torch.tensor([0.0, 1.0]) + 3 * torch.tensor([6.0, 7.0])) / 4)
    # rows = 2: bucket 0 <- ids 0 (x1); bucket 1 <- id 3 (x3)
    torch.testing.assert_close(emb.feature_table(0, 2), torch.tensor([[0.0, 1.0], [6.0, 7.0]]))
    assert not torch.equal(before, emb.feature_table(0, 2))


def test_head_alignment_trains_only_the_shallower_heads_towards_the_deepest_output():
    """The alignment loss reaches the shallower closing layers alone, and minimising it brings
    their outputs to the deepest depth's (relative squared error down by half in 200 steps)."""
    from search.mixed import ElasticMLP

    torch.manual_seed(0)
    mlp = ElasticMLP(13, (32, 64), 3, (0, 1, 2, 3), 16, "relu")
    x = torch.randn(256, 13)
    frozen = {n: p.detach().clone() for n, p in mlp.named_parameters() if not n.startswith(("heads.0", "heads.1", "heads.2"))}
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        opt.zero_grad(set_to_none=True)
        loss = mlp.head_alignment(x, 13**-0.5)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    for n, p in mlp.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("align", [True, False])
def test_a_largest_weight_step_moves_the_shallower_bottom_heads_only_when_aligning(align):
    from search.config import SearchConfig
    from search.run import Searcher, cost_tables
    from search_fixtures import toy_lut

    space = SMALL_KAGGLE
    config = SearchConfig(align_heads=align, sandwich=True, paths_per_step=1)
    search = Searcher(space, cost_tables(space, toy_lut(space, 64), 64, config), 1e9, config,
                      [torch.ones(c) for c in space.cardinalities])
    shallow = [h[0].weight.detach().clone() for h in search.net.bottom.heads[:-1]]
    dense, sparse = random_batch(space, 64, seed=3)
    y = torch.rand(64, generator=torch.Generator().manual_seed(4)).round()
    search.weight_step(dense, sparse, y, 1.0, step=0)  # step 0: the sandwich's largest arch
    moved = [not torch.equal(h[0].weight, w) for h, w in zip(search.net.bottom.heads[:-1], shallow)]
    assert all(moved) if align else not any(moved)


def test_a_weight_step_follows_the_mean_gradient_of_its_paths():
    """With paths_per_step 2 the step's gradient is the mean of two archs' gradients on the same batch, the
    archs those the generator draws in turn, and the step returns their mean loss."""
    from search.config import SearchConfig
    from search.run import Searcher, cost_tables
    from search_fixtures import toy_lut

    space = SMALL_KAGGLE
    config = SearchConfig(paths_per_step=2, sandwich=False, weight_grad_clip=None)
    search = Searcher(space, cost_tables(space, toy_lut(space, 64), 64, config), 1e9, config,
                      [torch.ones(c) for c in space.cardinalities])
    dense, sparse = random_batch(space, 64, seed=5)
    y = torch.rand(64, generator=torch.Generator().manual_seed(6)).round()
    weights = [p for p in search.dense_weights]
    start = search.generator.get_state()
    expected, losses = [torch.zeros_like(p) for p in weights], []
    for _ in range(2):
        probs = search.sample(64, 1.0, detach=True, uniform=True)
        probs = {g: search.extremes["largest"][g] if g in search.net.inherited_groups else p for g, p in probs.items()}
        loss = torch.nn.functional.binary_cross_entropy_with_logits(search.net(dense, sparse, probs), y)
        for e, g in zip(expected, torch.autograd.grad(loss, weights, allow_unused=True)):
            if g is not None:
                e += g / 2
        losses.append(loss.item())
    search.generator.set_state(start)
    for opt in search.weight_opts:
        opt.step = lambda *a, **k: None  # keep the gradient to compare, not the update
    assert search.weight_step(dense, sparse, y, 1.0, step=0) == pytest.approx(sum(losses) / 2)
    for p, e in zip(weights, expected):
        torch.testing.assert_close(p.grad if p.grad is not None else torch.zeros_like(p), e, rtol=1e-4, atol=1e-7)


def test_scoring_with_the_bottom_memo_equals_a_fresh_forward_and_reuses_the_bottom(monkeypatch):
    """Archs scored on the same held-out rows (`search.refine.supernet_loss`) compute the bottom MLP once per
    bottom they share, get the losses a fresh forward gives, and a bottom weight changed in place is not
    served from the memo."""
    from torch import nn

    from search.refine import HeldOut, evaluating, supernet_loss

    space = SMALL_KAGGLE
    net = trained_like(Supernet(space), 2)
    dense, sparse = random_batch(space, 300)
    labels = (torch.arange(300) % 3 == 0).float()
    rows = HeldOut(dense, sparse, labels)
    base = space.sample_choices(random.Random(4))
    moves = [(slot, alt) for g in ("emb_rows", "emb_dim", "top_depth") for slot, alts in
             zip(net.layout.groups[g].slots, net.layout.groups[g].choices) for alt in alts if alt != base[slot]]
    archs = [base] + [{**base, slot: alt} for slot, alt in moves[::7]]  # tables, dims and the top: one bottom
    calls = []
    bottom_forward = net.bottom.forward
    monkeypatch.setattr(net.bottom, "forward", lambda *a, **k: calls.append(1) or bottom_forward(*a, **k))

    def fresh(choices):
        probs = {g: t.float() for g, t in net.layout.one_hot(choices).items()}
        with torch.no_grad():
            return float(nn.functional.binary_cross_entropy_with_logits(net(dense, sparse, probs), labels))

    with evaluating(net):
        scored = [supernet_loss(net, c, rows, batch_size=128) for c in archs]
        assert len(archs) > 5 and len(calls) == 3  # one bottom, three batches of rows
        assert scored == pytest.approx([fresh(c) for c in archs], rel=1e-5)
        with torch.no_grad():
            next(net.bottom.parameters()).mul_(1.5)
        assert supernet_loss(net, base, rows, batch_size=128) == pytest.approx(fresh(base), rel=1e-5) != scored[0]


def test_an_arch_scored_again_on_the_same_rows_is_not_computed_again(monkeypatch):
    """`supernet_loss` keeps each arch's loss in its `HeldOut`; other rows, or a weight changed in place, are
    scored afresh."""
    from search.refine import HeldOut, evaluating, supernet_loss

    space = SMALL_KAGGLE
    net = trained_like(Supernet(space), 2)
    dense, sparse = random_batch(space, 200)
    rows = HeldOut(dense, sparse, (torch.arange(200) % 3 == 0).float())
    calls = []
    score = net.score
    monkeypatch.setattr(net, "score", lambda *a, **k: calls.append(1) or score(*a, **k))
    a, b = space.sample_choices(random.Random(1)), space.sample_choices(random.Random(2))
    with evaluating(net):
        first = [supernet_loss(net, c, rows) for c in (a, b)]
        assert [supernet_loss(net, c, rows) for c in (a, b)] == first and len(calls) == 2
        supernet_loss(net, a, HeldOut(dense, sparse, rows.labels))
        assert len(calls) == 3
        with torch.no_grad():
            next(net.top.parameters()).mul_(1.5)
        assert supernet_loss(net, a, rows) != first[0] and len(calls) == 4


def test_scoring_looks_up_only_the_tables_whose_choice_changed_and_gets_a_fresh_forwards_vectors(monkeypatch):
    """With a scoring memo, `Supernet.embedded` looks up only the features whose table size or dim differ from
    the last arch scored on those rows, with the values a fresh lookup gives; a table changed in place is
    looked up afresh."""
    space = SMALL_KAGGLE
    net = trained_like(Supernet(space), 2)
    _, sparse = random_batch(space, 64)
    base = space.sample_choices(random.Random(5))
    slot = net.layout.groups["emb_dim"].slots[1]
    moved = {**base, slot: next(d for d in net.layout.groups["emb_dim"].choices[1] if d != base[slot])}
    looked_up = []
    lookup = net.embeddings.lookup
    monkeypatch.setattr(net.embeddings, "lookup", lambda *a, **k: looked_up.append(k.get("features", a[3] if len(a) > 3 else None))
                        or lookup(*a, **k))

    def probs(choices):
        return {g: t.float() for g, t in net.layout.one_hot(choices).items()}

    memo = {}
    with torch.no_grad():
        for choices in (base, moved, moved):
            assert torch.equal(net.embedded(sparse, probs(choices), memo).clone(), net.embeddings(sparse, probs(choices)["emb_rows"],
                                                                                           probs(choices)["emb_dim"]))
        assert looked_up[0] is None and looked_up[2].tolist() == [1] and len(looked_up) == 5  # 3 memo-less lookups
        net.embeddings.table.weight.mul_(2.0)
        looked_up.clear()
        net.embedded(sparse, probs(moved), memo)
        assert looked_up == [None]
