"""The DLRM's fused training route: packed table lookups, huge-page buffers, updates in the backward pass.

The same numbers as the plain modules, in fewer and larger kernels
(`benchmarks/train_throughput.py` measures what each piece gains):

- `PackedGroup`, `PackedLookup`: the tables of one embedding dim are row ranges
  of one buffer (`rows_buffer`: on Linux CPU, in memory advised onto
  transparent huge pages), looked up with one `gather`; the backward pass gives
  each table the sparse gradient `nn.Embedding(sparse=True)` would give it, or,
  with an optimizer attached, updates the rows in place in one scatter.
- `MLPUpdatedInBackward`: an MLP whose weights take their plain SGD step in the
  backward pass, as one in-place GEMM per layer.

`dnas_hw.model` (`SparseArch`, `DLRM`) takes this route in training mode;
`dnas_hw.train` attaches the optimizers (`SparseSGD`, `updated_in_backward`).
Eval mode, and so every export, runs the registry's ops instead.
"""

from __future__ import annotations

import mmap

import torch
import torch.nn.functional as F
from torch import nn


class PackedGroup:
    """The tables of one embedding dim, their weights made views into one buffer [sum of rows, dim].

    Not a module: it holds references to the tables' parameters, never
    parameters of its own, so the state dict and `parameters()` are unchanged.
    """

    def __init__(self, tables: nn.ModuleList, dim: int):
        members = [f for f, t in enumerate(tables) if t.table.embedding_dim == dim]
        self.tables = [tables[f].table for f in members]  # their nn.Embedding modules
        self.features = torch.tensor(members, dtype=torch.long)
        rows = [t.num_embeddings for t in self.tables]
        self.rows = torch.tensor(rows, dtype=torch.long)
        starts = [0]
        for r in rows[:-1]:
            starts.append(starts[-1] + r)
        self.offsets = torch.tensor(starts, dtype=torch.long)
        first = self.tables[0].weight
        self.buffer = rows_buffer(sum(rows), dim, first.dtype, first.device)
        with torch.no_grad():
            # One table at a time, so each old weight is freed as soon as it is copied.
            for t, start, r in zip(self.tables, starts, rows):
                view = self.buffer[start : start + r]
                view.copy_(t.weight)
                t.weight = nn.Parameter(view, requires_grad=t.weight.requires_grad)
        self._addresses = [w.data_ptr() for w in self.weights()]

    def weights(self) -> list[torch.Tensor]:
        # Read from `_parameters`: a step calls this twice, and 26 `Module.__getattr__`
        # lookups each time cost more than the lookups themselves.
        return [t._parameters["weight"] for t in self.tables]

    def is_packed(self) -> bool:
        """Whether every table's weight still lives at its place in the buffer."""
        return [w.data_ptr() for w in self.weights()] == self._addresses

    def lookup(self, sparse: torch.Tensor, width: int, update_in_backward=None) -> torch.Tensor:
        """sparse [B, F] (all features) -> [B, F_g, width]: this group's lookups, zero-padded."""
        ids = sparse if len(self.tables) == sparse.shape[1] else sparse.index_select(1, self.features)
        local = ids % self.rows  # [B, F_g], the registry op's modulo
        weights = self.weights()
        # Updated in the backward pass, no table gets a gradient: one of them is enough to put
        # the lookup in the autograd graph, and spares the graph an edge per table.
        out = PackedLookup.apply(local, self.offsets, self.buffer, update_in_backward, *(weights[:1] if update_in_backward else weights))
        dim = self.buffer.shape[1]
        return F.pad(out, (0, width - dim)) if width > dim else out


def rows_buffer(rows: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised [rows, dim] tensor; on Linux CPU, in memory advised onto transparent huge pages.

    A step gathers and updates a few thousand random rows of hundreds of MB of
    tables: with 4 KiB pages nearly each row costs a TLB miss besides its cache
    miss; with 2 MiB pages far fewer (in our A/B under load, ~2% of a Kaggle-reference
    training step). Where the advice is unavailable or refused, plain `torch.empty`.
    """
    nbytes = rows * dim * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(rows, dim, dtype=dtype, device=device)
    # Private and anonymous (the default, shared, would be shmem, outside THP); untouched until first written.
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        memory.madvise(mmap.MADV_HUGEPAGE)
    except OSError:
        pass  # still a valid buffer, on small pages
    return torch.frombuffer(memory, dtype=dtype).view(rows, dim)


HUGE_PAGE = 2 << 20


class PackedLookup(torch.autograd.Function):
    """Lookups of F tables packed in one buffer, with each table's own sparse gradient.

    forward(local [B, F] row ids per table, offsets [F] first row of each table in
    `buffer`, buffer [R, d], update_in_backward (None or see `SparseArch`),
    *weights: the F tables, views into `buffer`) -> [B, F, d].
    The gradient of table f is the uncoalesced sparse tensor with indices
    `local[:, f]` and values `grad[:, f]`, as `nn.Embedding(sparse=True)` gives;
    with `update_in_backward`, those rows go straight into `buffer` instead, and
    `weights` may be just one table (no table gets a gradient).
    """

    @staticmethod
    def forward(ctx, local, offsets, buffer, update_in_backward, *weights):
        rows = (local + offsets).reshape(-1)  # [B * F] rows of `buffer`
        ctx.save_for_backward(rows if update_in_backward is not None else local)
        ctx.buffer, ctx.update, ctx.sizes = buffer, update_in_backward, [w.shape for w in weights]
        return buffer.index_select(0, rows).view(local.shape[0], local.shape[1], buffer.shape[1])

    @staticmethod
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        none = (None, None, None, None)
        if ctx.update is not None:
            ctx.update.add_rows_(ctx.buffer, saved, grad)
            return none + (None,) * len(ctx.sizes)
        # Contiguous per table, so that autograd keeps each table's gradient without a copy.
        ids = saved.t().unsqueeze(1).contiguous().unbind(0)  # F x [1, B]
        values = grad.transpose(0, 1).contiguous().unbind(0)  # F x [B, d]
        grads = [
            torch.sparse_coo_tensor(i, v, size, is_coalesced=False, check_invariants=False) if needed else None
            for i, v, size, needed in zip(ids, values, ctx.sizes, ctx.needs_input_grad[4:])
        ]
        return none + tuple(grads)


class MLPUpdatedInBackward(torch.autograd.Function):
    """An MLP of `LinearAct` layers (ReLU or none) whose weights take their plain SGD step in the backward pass.

    forward(x [B, n_0], lr, relus (one bool per layer), *params (W_1 [n_1, n_0], b_1 [n_1], ..., W_L, b_L))
    -> [B, n_L], the numbers of the `nn.Sequential` it stands for.
    backward: from the last layer, with g [B, n_l] the gradient at layer l's output (through its ReLU):
    the input's gradient g W_l (W_l before its step), then W_l -= lr g^T x_l as one in-place GEMM
    (`addmm_`, no weight gradient tensor written and read back by an optimizer) and
    b_l -= lr sum_B g. The parameters get no gradient. Like `PackedLookup`'s update, this is
    `SGD.step()` (no momentum, no weight decay) provided every backward is followed by a step.
    """

    @staticmethod
    def forward(ctx, x, lr, relus, *params):
        acts = [x]  # each layer's input, then the last layer's output: x_0 .. x_L
        for layer, relu in enumerate(relus):
            x = torch.addmm(params[2 * layer + 1], x, params[2 * layer].t())
            acts.append(x.relu_() if relu else x)
        ctx.save_for_backward(*acts)
        ctx.lr, ctx.relus, ctx.params = lr, relus, params
        return x

    @staticmethod
    def backward(ctx, grad):
        acts, params = ctx.saved_tensors, ctx.params
        for layer in reversed(range(len(ctx.relus))):
            if ctx.relus[layer]:
                grad = torch.ops.aten.threshold_backward(grad, acts[layer + 1], 0)
            weight, bias = params[2 * layer], params[2 * layer + 1]
            grad_input = grad.mm(weight) if layer or ctx.needs_input_grad[0] else None
            weight.addmm_(grad.t(), acts[layer], alpha=-ctx.lr)
            bias.add_(grad.sum(0), alpha=-ctx.lr)
            grad = grad_input
        return (grad, None, None) + (None,) * len(params)
