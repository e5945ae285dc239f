"""The DLRM built from an `Arch`: shapes, the registry modules it is made of, the packed
training route (and its update in the backward pass) against the per-feature ops, and
`model.pt` checkpoints."""

from __future__ import annotations

import copy
import mmap
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from dnas_hw.checkpoint import load_checkpoint, save_checkpoint
from dnas_hw.dlrm.arch import Arch
from dnas_hw.dlrm.model import build_model
from dnas_hw.errors import UserError
from dnas_hw.model import Probability
from dnas_hw.op_modules import HashedEmbedding, LinearAct
from dnas_hw.train import SparseSGD, make_optimizers, split_parameters, train_step, updated_in_backward

ARCHS = {
    "dot-equal-dims": Arch(num_dense=4, bottom_mlp=(8, 4), emb_dims=(4, 4, 4), emb_rows=(10, 20, 5),
                           interaction="dot", top_mlp=(6,)),
    "dot-mixed-dims": Arch(num_dense=4, bottom_mlp=(8,), emb_dims=(2, 8, 4, 8, 1), emb_rows=(10, 3, 7, 1, 50),
                           interaction="dot", top_mlp=(6, 3)),
    "cat-mixed-dims": Arch(num_dense=2, bottom_mlp=(5, 4), emb_dims=(4, 2, 3), emb_rows=(9, 9, 2),
                           interaction="cat", top_mlp=()),
    "cat-one-feature": Arch(num_dense=1, bottom_mlp=(3,), emb_dims=(3,), emb_rows=(4,), interaction="cat",
                            top_mlp=(2,)),
}
# Ids far beyond every table: lookups hash them with the modulo.
MAX_ID = 1000


def batch(arch: Arch, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, arch.num_dense, generator=g),
            torch.randint(0, MAX_ID, (b, arch.num_sparse), generator=g),
            torch.randint(0, 2, (b,), generator=g).float())


@pytest.mark.parametrize("name", ARCHS)
def test_shapes_of_every_part(name):
    arch = ARCHS[name]
    model = build_model(arch, seed=0)
    dense, sparse, _ = batch(arch, 7)
    d = arch.interaction_dim
    assert model.dense_arch(dense).shape == (7, d)
    for train in (True, False):
        embedded = model.sparse_arch.train(train)(sparse)
        assert len(embedded) == arch.num_sparse and all(e.shape == (7, d) for e in embedded)
    z = model.interaction(model.dense_arch(dense), *embedded)
    assert z.shape == (7, arch.ops().interaction.output_width())
    assert model(dense, sparse).shape == (7,)
    assert model(dense[:1], sparse[:1]).shape == (1,)
    p = Probability(model)(dense, sparse)
    assert torch.all((p > 0) & (p < 1))


@pytest.mark.parametrize("name", ARCHS)
def test_modules_are_the_archs_registry_ops(name):
    arch = ARCHS[name]
    model = build_model(arch)
    ops = arch.ops()
    linears = [m for m in model.dense_arch] + [m for m in model.over_arch]
    assert all(isinstance(m, LinearAct) for m in linears)
    assert [(m[0].in_features, m[0].out_features) for m in linears] == [
        (c.params["in_features"], c.params["out_features"]) for c in ops.bottom + ops.top
    ]
    assert isinstance(model.over_arch[-1][1], nn.Identity)  # the logit layer has no activation
    for table, call in zip(model.sparse_arch.tables, ops.embeddings):
        assert isinstance(table, HashedEmbedding)
        assert tuple(table.table.weight.shape) == (call.params["num_embeddings"], call.params["embedding_dim"])
    assert sum(p.numel() for p in model.parameters()) == arch.num_params()


def test_lookups_hash_ids_and_pad_with_zeros():
    arch = ARCHS["dot-mixed-dims"]
    model = build_model(arch, seed=0)
    sparse = torch.tensor([[10 + 3, 3 * 5 + 2, 7 + 6, 999, 50 * 3 + 49]])
    for train in (True, False):
        embedded = model.sparse_arch.train(train)(sparse)
        for f, (e, rows) in enumerate(zip(embedded, arch.emb_rows)):
            w = model.sparse_arch.tables[f].table.weight
            dim = arch.emb_dims[f]
            torch.testing.assert_close(e[0, :dim], w[sparse[0, f] % rows])
            assert torch.all(e[0, dim:] == 0)


def test_seeded_builds_are_reproducible_and_leave_the_global_rng_alone():
    arch = ARCHS["dot-mixed-dims"]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = build_model(arch, seed=1), build_model(arch, seed=1), build_model(arch, seed=2)
    assert torch.equal(torch.rand(3), before)
    for (ka, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), ka
    assert not all(torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("name", ARCHS)
def test_packed_training_route_equals_the_per_feature_ops(name):
    """Training looks up packed tables; eval (and export) runs each feature's registry op: same numbers."""
    arch = ARCHS[name]
    packed, per_feature = build_model(arch, seed=0), build_model(arch, seed=0)
    per_feature.sparse_arch.packed = False
    dense, sparse, y = batch(arch, 9)
    out = []
    for model in (packed, per_feature):
        model.train()
        logits = model(dense, sparse)
        nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
        out.append((logits, [t.table.weight.grad for t in model.sparse_arch.tables]))
    (logits_a, grads_a), (logits_b, grads_b) = out
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(packed.eval()(dense, sparse), logits_b)
    for ga, gb in zip(grads_a, grads_b):
        assert ga.is_sparse and gb.is_sparse
        torch.testing.assert_close(ga.coalesce().to_dense(), gb.coalesce().to_dense())


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-in-backward", "adagrad", "adam"])
def test_training_steps_match_the_per_feature_route(optimizer):
    """Packed lookups, the fused sparse SGD update and the update in the backward pass
    give the weights of plain per-table training."""
    arch = ARCHS["dot-mixed-dims"]
    name = optimizer.removesuffix("-in-backward")
    models = [build_model(arch, seed=0), build_model(arch, seed=0)]
    models[1].sparse_arch.packed = False
    plain_sgd = [torch.optim.SGD(models[1].parameters(), lr=0.1)] if name == "sgd" else None
    opts = [make_optimizers(*split_parameters(models[0]), name, 0.1),
            plain_sgd or make_optimizers(*split_parameters(models[1]), name, 0.1)]
    in_backward = updated_in_backward(models[0], opts[0]) if optimizer.endswith("in-backward") else nullcontext(opts[0])
    with in_backward as stepped:
        assert (models[0].sparse_arch.update_in_backward is not None) == optimizer.endswith("in-backward")
        assert (models[0].dense_update_in_backward is not None) == optimizer.endswith("in-backward")
        assert stepped == ([] if optimizer.endswith("in-backward") else opts[0])
        for step in range(5):
            dense, sparse, y = batch(arch, 16, seed=step)
            sparse[:4, 0] = sparse[4:8, 0]  # repeated rows in one batch must add up
            for model, opt in zip(models, (stepped, opts[1])):
                train_step(model.train(), opt, nn.BCEWithLogitsLoss(), dense, sparse, y)
            if optimizer.endswith("in-backward"):
                assert all(p.grad is None for p in models[0].parameters())
    assert models[0].sparse_arch.update_in_backward is None and models[0].dense_update_in_backward is None
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(models[0].sparse_arch.tables[0].table.weight, build_model(arch, seed=0).sparse_arch.tables[0].table.weight)


def test_parameters_are_updated_in_backward_only_with_plain_sgd_over_them():
    model = build_model(ARCHS["dot-equal-dims"], seed=0)
    dense, sparse = split_parameters(model)
    for opts in (make_optimizers(dense, sparse, "adagrad", 0.1), make_optimizers(dense, sparse[:1], "sgd", 0.1)):
        with updated_in_backward(model, opts) as stepped:
            assert model.sparse_arch.update_in_backward is None
            assert stepped == [o for o in opts if not isinstance(o, torch.optim.SGD)]  # only a plain SGD is left out
    momentum = [torch.optim.SGD(dense, lr=0.1, momentum=0.9), *make_optimizers([], sparse, "sgd", 0.1)]
    for opts in (make_optimizers(dense[1:], sparse, "sgd", 0.1), make_optimizers(dense, sparse, "adam", 0.1), momentum):
        with updated_in_backward(model, opts) as stepped:
            assert model.dense_update_in_backward is None
            assert stepped == [o for o in opts if not isinstance(o, SparseSGD)]
    model.sparse_arch.packed = False  # the per-feature route: the tables get gradients, SparseSGD must step
    opts = make_optimizers(dense, sparse, "sgd", 0.1)
    with updated_in_backward(model, opts) as stepped:
        assert stepped == opts[1:]


def test_mlp_updated_in_backward_equals_sgd_step_after_backward():
    """The fused MLP route: the same outputs, the same input gradient, and the weights of an SGD step."""
    arch = ARCHS["dot-mixed-dims"]
    fused, plain = build_model(arch, seed=0).train(), build_model(arch, seed=0).train()
    fused.dense_update_in_backward = torch.optim.SGD(fused.mlp_parameters(), lr=0.5)
    dense = batch(arch, 7)[0]  # the bottom MLP's input: no gradient wanted
    top_in = torch.randn(7, plain.over_arch[0][0].in_features)
    top_ins = [top_in.clone().requires_grad_(), top_in.clone().requires_grad_()]
    outs = []
    for model, x in zip((fused, plain), top_ins):
        out = (model._mlp(model.dense_arch, dense).sum(1) + model._mlp(model.over_arch, x).squeeze(1)).square()
        out.sum().backward()
        outs.append(out)
    torch.optim.SGD(plain.mlp_parameters(), lr=0.5).step()
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(top_ins[0].grad, top_ins[1].grad)
    assert all(p.grad is None for p in fused.mlp_parameters())
    for a, b in zip(fused.mlp_parameters(), plain.mlp_parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(fused.dense_arch[0][0].weight, build_model(arch, seed=0).dense_arch[0][0].weight)


def test_a_sparse_part_without_the_packed_route_trains():
    """A replacement sparse part (examples/torchrec's, say) need only map ids to F tensors [B, D]."""

    class PlainSparseArch(nn.Module):
        def __init__(self, tables):
            super().__init__()
            self.tables = tables

        def forward(self, sparse):
            return [table(ids) for table, ids in zip(self.tables, sparse.unbind(1))]

    arch = ARCHS["dot-mixed-dims"]
    model, reference = build_model(arch, seed=0), build_model(arch, seed=0)
    reference.sparse_arch.packed = False
    model.sparse_arch = PlainSparseArch(model.sparse_arch.tables)
    dense, sparse, _ = batch(arch, 8)
    torch.testing.assert_close(model.train()(dense, sparse), reference.train()(dense, sparse))


def test_tables_moved_off_their_packing_still_train_correctly():
    arch = ARCHS["cat-mixed-dims"]
    model = build_model(arch, seed=0)
    moved = copy.deepcopy(model)  # every table gets its own storage
    dense, sparse, y = batch(arch, 8)
    outs = []
    for m in (model, moved):
        opt = make_optimizers(*split_parameters(m), "sgd", 0.5)
        train_step(m.train(), opt, nn.BCEWithLogitsLoss(), dense, sparse, y)
        outs.append(m.eval()(dense, sparse))
    torch.testing.assert_close(outs[0], outs[1])


def test_checkpoint_round_trip(tmp_path):
    arch = ARCHS["dot-mixed-dims"]
    model = build_model(arch, seed=3)
    save_checkpoint(tmp_path / "model.pt", model, extra={"note": "x"})
    loaded, extra = load_checkpoint(tmp_path / "model.pt")
    assert loaded.arch == arch and extra == {"note": "x"} and not loaded.training
    dense, sparse, _ = batch(arch, 5)
    torch.testing.assert_close(loaded(dense, sparse), model.eval()(dense, sparse))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(payload) == {"format", "arch", "state_dict", "extra"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_is_a_user_error(tmp_path, content):
    path = tmp_path / "model.pt"
    if content == "truncated":
        save_checkpoint(path, build_model(ARCHS["cat-one-feature"]))
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(UserError, match="model.pt"):
        load_checkpoint(path)


def test_foreign_or_mismatched_checkpoints_are_user_errors(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a dnas-hw checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    model = build_model(ARCHS["cat-one-feature"])
    payload = {"format": "dnas-hw-model/1", "arch": ARCHS["dot-equal-dims"].to_dict(),
               "state_dict": model.state_dict(), "extra": {}}
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(UserError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.pt")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _vm_flags_at(address: int) -> list[str]:
    """The VmFlags of this process's mapping that holds `address` (Linux /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    return []


@pytest.mark.skipif(not Path("/proc/self/smaps").exists() or not hasattr(mmap, "MADV_HUGEPAGE"), reason="Linux only")
def test_large_packed_tables_are_advised_onto_huge_pages_and_train_as_before():
    arch = Arch(num_dense=2, bottom_mlp=(4,), emb_dims=(4, 4), emb_rows=(70_000, 70_000), interaction="dot", top_mlp=(3,))
    packed, per_feature = build_model(arch, seed=0), build_model(arch, seed=0)
    per_feature.sparse_arch.packed = False
    buffer = packed.sparse_arch.groups[0].buffer  # 2 x 70,000 x 4 floats: over one 2 MiB page
    assert "hg" in _vm_flags_at(buffer.data_ptr())
    dense, sparse, y = batch(arch, 16)
    for model in (packed, per_feature):
        opts = make_optimizers(*split_parameters(model), "sgd", 0.5)
        with updated_in_backward(model, opts) as stepped:
            train_step(model.train(), stepped, nn.BCEWithLogitsLoss(), dense, sparse, y)
    for (name, a), b in zip(packed.state_dict().items(), per_feature.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert packed.sparse_arch.groups[0].is_packed()
