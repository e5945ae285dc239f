"""The op registry, parametrised over every registered op.

Each registered op needs a small case below, with its FLOPs and parameter count
worked out by hand; `test_every_registered_op_has_a_case` fails for an op
registered without one.
"""

from __future__ import annotations

import pytest
import torch

from dnas_hw.onnx_io import export_module
from dnas_hw.op_modules import PairwiseDots
from dnas_hw.ops import OpCall, get_op, interaction_kinds, register_op, registered_ops
from op_checks import assert_onnx_round_trip

BATCH = 5

# op -> (params, FLOPs at BATCH, parameter count), by hand.
SMALL_CASES = {
    # 2*B*in*out multiply-adds; weights in*out plus out biases.
    "linear": ({"in_features": 3, "out_features": 4, "activation": "relu"}, 2 * 5 * 3 * 4, 3 * 4 + 4),
    # A lookup does no arithmetic; 7 rows of 2 values.
    "embedding": ({"num_embeddings": 7, "embedding_dim": 2, "pad_to": 3}, 0, 7 * 2),
    # Gram matrix of 3 vectors of width 4 per sample: 3*3*4 multiply-adds, times 2, times B.
    "interaction_dot": ({"num_sparse": 2, "dim": 4}, 2 * 5 * 9 * 4, 0),
    "interaction_cat": ({"num_sparse": 2, "dim": 4}, 0, 0),
}
# The core's own ops; plugins (examples/dcn, a test's toy family) register theirs in the same
# registry and bring their own tests.
OPS = [n for n in registered_ops() if get_op(n).build.__module__.startswith("dnas_hw.")]


def small_call(op: str) -> OpCall:
    return OpCall.make(op, **SMALL_CASES[op][0])


def test_every_registered_op_has_a_case():
    assert set(OPS) == set(SMALL_CASES), "add a hand-worked case for each new op"


def test_interaction_kinds_follow_the_registry():
    assert interaction_kinds() == sorted(n.removeprefix("interaction_") for n in OPS if n.startswith("interaction_"))


@pytest.mark.parametrize("op", OPS)
def test_forward_shape_is_output_width(op):
    call = small_call(op)
    inputs = call.example_inputs(BATCH, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = call.build()(*inputs)
    assert out.shape == (BATCH, call.output_width())


@pytest.mark.parametrize("op", OPS)
def test_lut_key_is_canonical_and_deterministic(op):
    params = SMALL_CASES[op][0]
    reversed_order = dict(reversed(list(params.items())))
    a, b = OpCall.make(op, **params), OpCall.make(op, **reversed_order)
    assert a == b and hash(a) == hash(b)
    assert a.key(64) == b.key(64) == (op, a.params_json, 64)
    assert " " not in a.params_json and list(a.params) == sorted(params)
    assert a.key(64) != a.key(1)


@pytest.mark.parametrize("op", OPS)
def test_flops_and_params_by_hand(op):
    call = small_call(op)
    _, flops, num_params = SMALL_CASES[op]
    assert call.flops(BATCH) == flops
    assert call.num_params() == num_params
    assert sum(p.numel() for p in call.build().parameters()) == num_params


@pytest.mark.parametrize("op", OPS)
def test_onnx_round_trip_matches_torch(op):
    assert_onnx_round_trip(small_call(op), BATCH)


def test_embedding_exports_as_gather_without_loop():
    call = OpCall.make("embedding", num_embeddings=50, embedding_dim=3, pad_to=4)
    inputs = call.example_inputs(BATCH, torch.Generator().manual_seed(0))
    ops = {n.op_type for n in export_module(call.build(), inputs, ["ids"], ["y"]).graph.node}
    assert "Gather" in ops and "Loop" not in ops
    # The modulo that makes a small table a hashed one is part of the exported op.
    assert "Mod" in ops


def test_embedding_hashes_ids_and_zero_pads():
    module = OpCall.make("embedding", num_embeddings=4, embedding_dim=2, pad_to=3).build()
    ids = torch.tensor([1, 5, 10])  # 5 -> row 1, 10 -> row 2
    with torch.no_grad():
        out = module(ids)
    w = module.table.weight
    torch.testing.assert_close(out[:, :2], w[[1, 1, 2]])
    assert torch.all(out[:, 2] == 0)


def test_dot_interaction_by_hand():
    module = OpCall.make("interaction_dot", num_sparse=2, dim=2).build()
    dense, s1, s2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([[5.0, 6.0]])
    # dense, then the lower triangle without the diagonal: (s1.d), (s2.d), (s2.s1).
    expected = torch.tensor([[1.0, 2.0, 11.0, 17.0, 39.0]])
    torch.testing.assert_close(module(dense, s1, s2), expected)


def test_dot_interaction_trains_with_the_gradient_of_the_plain_formula():
    pairs = OpCall.make("interaction_dot", num_sparse=3, dim=2).build().pairs
    t = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: PairwiseDots.apply(x, pairs), (t,))
    # Training mode (PairwiseDots) against eval mode (Gram matrix, then indexing): values and gradients.
    call = OpCall.make("interaction_dot", num_sparse=5, dim=3)
    module = call.build()
    results = []
    for training in (True, False):
        inputs = [x.requires_grad_() for x in call.example_inputs(4, torch.Generator().manual_seed(0))]
        out = module.train(training)(*inputs)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out).cos())
        results.append((out, [x.grad for x in inputs]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_unknown_op_and_wrong_params_are_refused():
    with pytest.raises(KeyError, match="nope"):
        get_op("nope")
    with pytest.raises(ValueError, match="out_features"):
        OpCall.make("linear", in_features=3, activation="relu")
    with pytest.raises(ValueError, match="activation"):
        OpCall.make("linear", in_features=3, out_features=2, activation="gelu-ish").build()


def test_duplicate_registration_raises():
    spec = get_op("linear")
    with pytest.raises(ValueError, match="already registered"):
        register_op(
            "linear",
            params=spec.param_names,
            example_inputs=spec.example_inputs,
            output_width=spec.output_width,
            flops=spec.flops,
            num_params=spec.num_params,
        )(spec.build)
    assert get_op("linear") is spec
