"""Mixed ops with weights shared by masking: each holds the largest candidate only.

Probabilities come per batch (`[n]`, `[F, n]`) or per sample (`[B, n]`,
`[B, F, n]`); the masks broadcast either way. At a one-hot probability a mixed
op computes exactly its candidate, with the candidate's weights being the
leading slice of the shared ones (see `search.extract`).

Fan-in scaling: the shared max-width linear is initialised for its full input
width, so a candidate reading only u < in of its inputs would start with
outputs sqrt(in / u) times too small (a supernet whose narrow layers stall at
the base rate). Each linear therefore multiplies its input by
s = sqrt(in) * E[1/sqrt(u)], the expectation over the input width's
distribution, which makes every candidate start as if initialised for its own
fan-in; its weight gradient is divided by s^2 (it uses x / s), so each
candidate's effective weight W*s also trains at the standalone learning rate.
`search.extract` folds s into the derived model's weights.

Initialisation: the shared linears start He-normal (std sqrt(gain / in), bias
0; gain 2 before a ReLU, 1 before the logit), so with the fan-in scale every
candidate starts He-initialised for its own fan-in. PyTorch's default
(variance 1 / (3 fan-in)) shrinks the signal ~2.4x a layer: a standalone model
grows out of that, but a supernet trained on a new random arch every batch did
not (logit std 0.002 after 40 steps and a training loss at the base rate for
400 steps on synth200k, where the He start kept the logits alive and learned).

Single-path fast path: when per-batch probabilities are an exact one-hot that
needs no gradient (weight steps with hard sampling), a mixed op runs only the
chosen candidate on the weight slice, so the step costs the sampled arch, not
the largest. Activations then keep their true width (a narrower input than a
layer's full one is zero-padded, or the weight sliced, as each path needs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnas_hw.ops import OpCall


def fixed_choice(probs: torch.Tensor) -> int | None:
    """The chosen index when `probs` is one per-batch one-hot that needs no gradient, else None."""
    if probs.dim() != 1 or probs.requires_grad:
        return None
    j = int(probs.argmax())
    return j if probs[j] == 1.0 and probs.sum() == 1.0 else None


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x


InvSqrtWidth = float | torch.Tensor  # E[1/sqrt(input width)]: exact (float) or per batch/sample [..., 1]


class _FanInScaledLinear(torch.autograd.Function):
    """y = (x * s) W^T + b, with W's gradient taken against x / s (see the module docstring).

    x [B, u], weight [w, u], bias [w], s a [1] or [B, 1] tensor without gradient. Since s is one
    number per row, it scales the product x W^T [B, w] rather than x or W: one pass over B x w
    elements in each direction instead of B x u (or w x u for W), the most of a soft step's
    elementwise work when w < u or B < u.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale):
        ctx.save_for_backward(x, weight, scale)
        product = F.linear(x, weight)
        return product.mul_(scale) if bias is None else torch.addcmul(bias, product, scale)

    @staticmethod
    def backward(ctx, grad):
        x, weight, scale = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight).mul_(scale)
        if ctx.needs_input_grad[1]:
            grad_w = (grad / scale).t() @ x
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def fan_in_scale(in_features: int, inv_sqrt_width: InvSqrtWidth) -> InvSqrtWidth:
    """s = sqrt(in_features) * E[1/sqrt(u)]: 1 for an input of the layer's full width."""
    return in_features**0.5 * inv_sqrt_width


def scaled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, in_features: int,
                  inv_sqrt_width: InvSqrtWidth) -> torch.Tensor:
    """x [B, u] @ weight [w, u]^T (+ bias), a slice of a shared linear of `in_features` inputs, fan-in scaled."""
    scale = fan_in_scale(in_features, inv_sqrt_width)
    if isinstance(scale, float) and abs(scale - 1.0) < 1e-12:
        return F.linear(x, weight, bias)
    return _FanInScaledLinear.apply(x, weight, bias, torch.as_tensor(scale, dtype=x.dtype).detach().reshape(-1, 1))


def sliced_linear(layer: nn.Module, x: torch.Tensor, inv_sqrt_width: InvSqrtWidth, out_features: int | None = None,
                  columns: torch.Tensor | None = None) -> torch.Tensor:
    """A LinearAct on x [B, u] (u <= its input width), fan-in scaled, restricted to its first `out_features`
    outputs; x's u columns are the layer's first u inputs, or those at `columns` ([u] ints)."""
    lin, act = layer[0], layer[1]
    out = lin.out_features if out_features is None else out_features
    weight = lin.weight[:out, : x.shape[1]] if columns is None else lin.weight[:out].index_select(1, columns)
    return act(scaled_linear(x, weight, lin.bias[:out], lin.in_features, inv_sqrt_width))


def mixed_inv_sqrt_width(probs: torch.Tensor, widths: tuple[int, ...], carried: InvSqrtWidth | None = None) -> InvSqrtWidth:
    """E[1/sqrt(width)] of an output whose width is widths[j] with probs[..., j], or (a trailing
    skip choice) the carried input's. A float at a fixed choice, else [..., 1] without gradient."""
    n = len(widths)
    j = fixed_choice(probs)
    if j is not None:
        return carried if j == n else widths[j] ** -0.5
    inv = probs[..., :n].detach() @ torch.tensor(widths, dtype=probs.dtype) ** -0.5
    if probs.shape[-1] > n:
        inv = inv + probs[..., n].detach() * (carried if isinstance(carried, float) else carried[..., 0])
    return inv[..., None]


def shared_linear(in_features: int, out_features: int, activation: str) -> nn.Module:
    """The registry's `linear` op (a LinearAct), He-normal initialised (see the module docstring)."""
    layer = OpCall.make("linear", in_features=in_features, out_features=out_features, activation=activation).build()
    gain = 2.0 if activation == "relu" else 1.0
    with torch.no_grad():
        layer[0].weight.normal_(0.0, (gain / in_features) ** 0.5)
        layer[0].bias.zero_()
    return layer


def prefix_masks(widths: tuple[int, ...], size: int) -> torch.Tensor:
    """[n, size] float: row j is 1 on the first widths[j] coordinates."""
    return (torch.arange(size)[None, :] < torch.tensor(widths)[:, None]).float()


class MixedLinear(nn.Module):
    """One MLP layer choosing its width (and, with `skip`, whether it exists).

    x [B, in_width] -> [B, out_width], out_width = max(widths), or
    max(widths, in_width) with skip (a skipped layer passes x on, zero-padded).
    probs [..., n] over `widths` (+ skip last):
        y = act(W x + b) * (probs[:n] @ masks) + probs[skip] * pad(x)
    A smaller input arrives zero-padded, so the candidate (u -> w) uses W[:w, :u].
    """

    def __init__(self, in_width: int, widths: tuple[int, ...], skip: bool, activation: str = "relu"):
        super().__init__()
        self.widths, self.skip = widths, skip
        self.linear = shared_linear(in_width, max(widths), activation)
        self.out_width = max(max(widths), in_width) if skip else max(widths)
        self.register_buffer("masks", prefix_masks(widths, max(widths)), persistent=False)

    def forward(self, x: torch.Tensor, probs: torch.Tensor, inv_sqrt_width: InvSqrtWidth) -> tuple[torch.Tensor, InvSqrtWidth]:
        """-> (y, E[1/sqrt(y's width)]); `inv_sqrt_width` is x's (see `mixed_inv_sqrt_width`)."""
        n = len(self.widths)
        out_inv = mixed_inv_sqrt_width(probs, self.widths, inv_sqrt_width)
        j = fixed_choice(probs)
        if j is not None:
            return (x if j == n else sliced_linear(self.linear, x, inv_sqrt_width, self.widths[j])), out_inv
        x = pad_to(x, self.linear[0].in_features)
        y = sliced_linear(self.linear, x, inv_sqrt_width) * (probs[..., :n] @ self.masks)
        y = F.pad(y, (0, self.out_width - y.shape[1]))
        if self.skip:
            y = y + probs[..., n:] * F.pad(x, (0, self.out_width - x.shape[1]))
        return y, out_inv


class MixedEmbeddings(nn.Module):
    """Every feature's table-size and dim choice, in one fused table.

    sparse [B, F] int64, rows_probs [..., F, R], dim_probs [..., F, E] -> [B, F, D].
    Each table-size candidate r of feature f has rows of its own,
    [offset_{f,r}, offset_{f,r} + rows_f[r]) of one [sum_f sum_r rows_f[r], D]
    table (D = max dim = the interaction width; the fractions 1, 0.1, 0.01,
    0.001 cost 1.11x the full tables), read at `id mod rows_f[r]`; all
    candidates are read with one gather of [B, F, R] indices, a dim candidate
    is a prefix mask. Gradients are sparse (only the rows a batch touches).
    Own rows, not a hashed view of the full table's leading rows: shared, a
    smaller candidate's rows are updated more often per row, look better early
    and took the planted important features' tables.
    """

    def __init__(self, rows: tuple[tuple[int, ...], ...], dims: tuple[int, ...], sparse_grad: bool = True):
        super().__init__()
        self.rows, self.dims, self.dim = rows, dims, max(dims)
        r_max = max(len(r) for r in rows)
        blocks = [size for r in rows for size in r]  # every (feature, size candidate) block, in order
        starts = torch.tensor([0] + blocks[:-1]).cumsum(0).tolist()
        offsets, k = [], 0
        for r in rows:
            own = starts[k : k + len(r)]
            offsets.append(own + [own[0]] * (r_max - len(r)))  # padded sizes repeat the largest's; probability 0
            k += len(r)
        moduli = torch.tensor([list(r) + [r[0]] * (r_max - len(r)) for r in rows])
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)  # [F, R]
        self.register_buffer("moduli", moduli, persistent=False)  # [F, R]
        self.register_buffer("masks", prefix_masks(dims, self.dim), persistent=False)  # [E, D]
        self.table = nn.Embedding(sum(blocks), self.dim, sparse=sparse_grad)
        with torch.no_grad():  # DLRM's init per table: uniform in +-1/sqrt(rows)
            for start, size in zip(starts, blocks):
                self.table.weight[start : start + size].uniform_(-(size**-0.5), size**-0.5)

    def forward(self, sparse: torch.Tensor, rows_probs: torch.Tensor, dim_probs: torch.Tensor) -> torch.Tensor:
        if self.is_fixed(rows_probs):
            return self.lookup(sparse, rows_probs, dim_probs)
        idx = self.offsets + sparse[:, :, None] % self.moduli  # [B, F, R]
        vectors = self.table(idx)  # [B, F, R, D]
        mixed = (rows_probs.to(vectors.dtype)[..., None] * vectors).sum(-2)  # [B, F, D]
        return mixed * (dim_probs @ self.masks)

    @staticmethod
    def is_fixed(probs: torch.Tensor) -> bool:
        """Whether `probs` [F, n] (no gradient) pick one candidate per feature for the whole batch."""
        return probs.dim() == 2 and not probs.requires_grad and bool((probs.max(-1).values == 1.0).all())

    def lookup(self, sparse: torch.Tensor, rows_probs: torch.Tensor, dim_probs: torch.Tensor,
               features: torch.Tensor | None = None) -> torch.Tensor:
        """`forward` at one table size per feature (`is_fixed` rows_probs): one lookup per feature instead of R.
        With `features` [k] (indices), only those features' vectors: [B, k, D], the values `forward` gives them."""
        chosen = rows_probs.to(self.moduli.dtype)
        moduli, offsets = (self.moduli * chosen).sum(-1), (self.offsets * chosen).sum(-1)  # [F] each
        masks = dim_probs @ self.masks  # [F, D]
        if features is not None:
            sparse, moduli, offsets, masks = sparse[:, features], moduli[features], offsets[features], masks[features]
        return self.table(offsets + sparse % moduli) * masks

    @torch.no_grad()
    def inherit_from_largest(self, counts: list[torch.Tensor]) -> None:
        """Set every smaller table candidate of each feature to the hashed image of its largest one.

        `counts[f]` [cardinality_f]: how often each id of feature f occurs. Row j of a candidate
        of r rows becomes the count-weighted mean of the largest table's rows i with i mod r = j
        (the least-squares best r-row table under the data's id frequencies); a row no id reaches
        keeps its value. After the largest tables have trained, a smaller candidate then starts
        from what hashing the trained table would give, and the search compares sizes by what
        hashing loses rather than by how often each candidate's own rows happened to be trained.
        """
        for f, (sizes, count) in enumerate(zip(self.rows, counts)):
            largest = self.feature_table(f, sizes[0])  # [rows_0, D]
            weight = count[: sizes[0]].to(largest.dtype)[:, None]
            for rows in sizes[1:]:
                bucket = torch.arange(sizes[0]) % rows
                total = torch.zeros(rows, largest.shape[1], dtype=largest.dtype).index_add_(0, bucket, largest * weight)
                mass = torch.zeros(rows, 1, dtype=largest.dtype).index_add_(0, bucket, weight)
                target = self.feature_table(f, rows)
                reached = mass[:, 0] > 0
                target[reached] = total[reached] / mass[reached]

    def feature_table(self, f: int, rows: int) -> torch.Tensor:
        """Feature f's table of `rows` rows (one of its size candidates): [rows, D]."""
        start = int(self.offsets[f, self.rows[f].index(rows)])
        return self.table.weight[start : start + rows]


class ElasticMLP(nn.Module):
    """An MLP choosing each hidden layer's width and how many leading layers it keeps (elastic depth).

    x [B, u] -> [B, out_width] (or its first `out_features` outputs at a fixed choice).
    width_probs [..., L, n] over `widths`, depth_probs [..., n_d] over `depths`.
    Layer i is one shared linear (in_width or max(widths) -> max(widths), relu); each depth k
    has a closing linear of its own, `heads[k]`, reading layer k-1's output (x at k = 0):

        y = sum_k P(depth_k) head_k(h_k),   h_0 = x,   h_i+1 = relu(W_i h_i + b_i) * (p_i @ masks)

    So every layer reads one producer in every arch, and a closing layer's weights are never
    shared between producers of different meaning. `columns` ([u] ints): x is a compact input
    whose columns are those inputs of the first reader (layer 0, or head 0) (see DLRM's
    `search.dlrm.supernet.MixedInteraction`); otherwise x's u columns are the leading inputs.
    """

    def __init__(self, in_width: int, widths: tuple[int, ...], layers: int, depths: tuple[int, ...],
                 out_width: int, out_activation: str):
        super().__init__()
        self.widths, self.depths, self.in_width = widths, depths, in_width
        w = max(widths)
        self.layers = nn.ModuleList(shared_linear(in_width if i == 0 else w, w, "relu") for i in range(layers))
        self.heads = nn.ModuleList(shared_linear(in_width if k == 0 else w, out_width, out_activation) for k in depths)
        self.register_buffer("masks", prefix_masks(widths, w), persistent=False)

    def head(self, depth: int) -> nn.Module:
        """The closing linear used at `depth` kept layers."""
        return self.heads[self.depths.index(depth)]

    def head_alignment(self, x: torch.Tensor, inv_sqrt_width: InvSqrtWidth) -> torch.Tensor:
        """How far the shallower depths' outputs are from the deepest's, at the full widths: a scalar.

        mean over depths k < max of ||head_k(h_k) - head_max(h_max)||^2 / ||head_max(h_max)||^2 on
        x [B, in_width], the layers' outputs h and the deepest output detached, so only the
        shallower heads learn from it. Where the output feeds shared weights that read it as one
        vector (DLRM's bottom output, dotted with every embedding), a head of its own per depth
        otherwise puts each depth's output in a space of its own, and the shared readers are
        pulled between them.
        """
        with torch.no_grad():
            hidden, inv = [x], [inv_sqrt_width]
            for layer in self.layers[: max(self.depths)]:
                hidden.append(sliced_linear(layer, hidden[-1], inv[-1]))
                inv.append(layer[0].out_features**-0.5)
            target = sliced_linear(self.heads[-1], hidden[-1], inv[-1])
        gaps = [(sliced_linear(self.heads[k], hidden[d], inv[d]) - target).pow(2).sum(-1).mean()
                for k, d in enumerate(self.depths) if d != max(self.depths)]
        return torch.stack(gaps).mean() / target.pow(2).sum(-1).mean().clamp_min(1e-12)

    def forward(self, x: torch.Tensor, width_probs: torch.Tensor, depth_probs: torch.Tensor, inv_sqrt_width: InvSqrtWidth,
                out_features: int | None = None, columns: torch.Tensor | None = None) -> torch.Tensor:
        """`inv_sqrt_width`: E[1/sqrt(u)] of x (see `mixed_inv_sqrt_width`)."""
        k = fixed_choice(depth_probs)
        if k is not None:
            chosen = [fixed_choice(width_probs[i]) for i in range(self.depths[k])]
            if None not in chosen:  # single path: the sampled arch's layers on weight slices
                for i, j in enumerate(chosen):
                    x = sliced_linear(self.layers[i], x, inv_sqrt_width, self.widths[j], columns if i == 0 else None)
                    inv_sqrt_width = self.widths[j] ** -0.5
                return sliced_linear(self.heads[k], x, inv_sqrt_width, out_features, columns if not chosen else None)
        if columns is not None:
            x = x.new_zeros(x.shape[0], self.in_width).index_copy(1, columns, x)
        x, out = pad_to(x, self.in_width), 0
        for i in range(max(self.depths) + 1):
            if i in self.depths:
                k = self.depths.index(i)
                out = out + depth_probs[..., k : k + 1] * sliced_linear(self.heads[k], x, inv_sqrt_width)
            if i < max(self.depths):
                p = width_probs[..., i, :]
                x = sliced_linear(self.layers[i], x, inv_sqrt_width) * (p @ self.masks)
                inv_sqrt_width = mixed_inv_sqrt_width(p, self.widths)
        return out
