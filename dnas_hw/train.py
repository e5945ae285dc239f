"""Training and evaluation of a model on a prepared data folder; `train_arch` trains an arch into a run folder.

Embedding tables use sparse gradients (only the rows a batch touches are
updated), as the DLRM reference does; dense and sparse parameters get their own
optimizer where the algorithm needs one (Adam: Adam + SparseAdam).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from dnas_hw import distributed
from dnas_hw.checkpoint import save_checkpoint
from dnas_hw.data.folder import PreparedData, Split, iterate_batches, num_batches
from dnas_hw.distributed import split_parameters
from dnas_hw.errors import UserError
from dnas_hw.family import build_model
from dnas_hw.files import (
    check_writable,
    load_torch,
    output_lock,
    removed_if_left_empty,
    save_torch_atomic,
    write_json_atomic,
    write_text_atomic,
)
from dnas_hw.memory import require_memory, training_bytes
from dnas_hw.metrics import ctr_metrics
from dnas_hw.model import SparseArch
from dnas_hw.progress import progress

OPTIMIZERS = ("sgd", "adagrad", "adam")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    # Adam 1e-3 at batch 256 learns the planted teacher on every seed (test AUC 0.81, seeds within
    # 0.001 logloss), where DLRM's Kaggle recipe (SGD 0.1, batch 128) learned it on some seeds
    # only (0.54-0.58 logloss). SGD stays selectable.
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    seed: int = 0
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer {self.optimizer!r}: use one of {list(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("epochs, batch size and learning rate must be positive")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizers(params: list[nn.Parameter], sparse: list[nn.Parameter], name: str, lr: float) -> list[torch.optim.Optimizer]:
    """Optimizers covering dense `params` and sparse-gradient `sparse` weights."""
    if name == "sgd":
        opts: list[torch.optim.Optimizer] = [torch.optim.SGD(params, lr=lr)] if params else []
        return opts + ([SparseSGD(sparse, lr=lr)] if sparse else [])
    if name == "adagrad":
        return [torch.optim.Adagrad(params + sparse, lr=lr)]
    if name == "adam":
        # fused: one kernel over all dense tensors; on one CPU thread a step over the supernet's ~6M dense
        # weights took 6.4 ms fused, 13.3 ms foreach and 29.4 ms with the default per-tensor loop.
        opts = [torch.optim.Adam(params, lr=lr, fused=True)] if params else []
        return opts + ([torch.optim.SparseAdam(sparse, lr=lr)] if sparse else [])
    raise UserError(f"optimizer {name!r}: use one of {list(OPTIMIZERS)}")


class SparseSGD(torch.optim.Optimizer):
    """Plain SGD for embedding tables with sparse gradients: `w -= lr * grad`, duplicate rows adding up.

    The same arithmetic as `torch.optim.SGD`, but tables whose weights are views
    into one buffer (`dnas_hw.model.SparseArch` packs the tables of equal dim)
    are updated together: their gradient rows, shifted to each table's first
    row in the buffer, go in with one `scatter_add_` instead of one update per table.
    """

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})
        self._plan_key: tuple[int, ...] = ()
        self._plan: list[_SharedRows] = []

    @torch.no_grad()
    def add_rows_(self, buffer: torch.Tensor, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """The step for gradient rows `grads` [..., d] (N rows, any layout) of `buffer` [R, d] rows `rows` [N], done at once.

        Called from the backward pass when the tables are updated there
        (`updated_in_backward`); one parameter group, so one learning rate.
        """
        # The product is a new contiguous tensor whatever the layout of `grads`: its rows are a view.
        _scatter_add_rows_(buffer, rows, (grads * -self.param_groups[0]["lr"]).reshape(-1, grads.shape[-1]))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for shared in self._shared_rows([p for p in group["params"] if p.grad is not None]):
                shared.add_grad(-group["lr"])
        return None

    def _shared_rows(self, params: list[torch.Tensor]) -> list["_SharedRows"]:
        """`params` grouped by the buffer they are rows of; the grouping is cached by their addresses."""
        key = tuple(p.data_ptr() for p in params)
        if key != self._plan_key:
            groups: dict[object, list[torch.Tensor]] = {}
            for p in params:
                rows_of_a_buffer = p.dim() == 2 and p.is_contiguous() and p.storage_offset() % p.shape[1] == 0
                buffer = (p.untyped_storage().data_ptr(), p.shape[1], p.dtype) if rows_of_a_buffer else id(p)
                groups.setdefault(buffer, []).append(p)
            self._plan_key, self._plan = key, [_SharedRows(ps) for ps in groups.values()]
        return self._plan


class _SharedRows:
    """Weights [rows, d] that are row ranges of one buffer (or one tensor of any shape)."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        p = params[0]
        if len(params) > 1:
            storage, d = p.untyped_storage(), p.shape[1]
            self.buffer = torch.empty(0, dtype=p.dtype, device=p.device).set_(storage, 0, (storage.nbytes() // (p.element_size() * d), d))
            self.first_rows = torch.tensor([q.storage_offset() // d for q in params], device=p.device)

    def add_grad(self, scale: float) -> None:
        """weights += scale * their gradients."""
        grads = [p.grad for p in self.params]
        if len(self.params) == 1 or not all(g.is_sparse for g in grads):
            for p, g in zip(self.params, grads):
                p.add_(g, alpha=scale)
            return
        rows = torch.cat([g._indices()[0] for g in grads])
        counts = torch.tensor([g._nnz() for g in grads], device=rows.device)
        rows += torch.repeat_interleave(self.first_rows, counts, output_size=len(rows))
        _scatter_add_rows_(self.buffer, rows, torch.cat([g._values() for g in grads]).mul_(scale))


def _scatter_add_rows_(buffer: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """buffer[rows[i]] += values[i] for each i, repeated rows adding up (buffer [R, d], rows [N], values [N, d])."""
    # scatter_add_ with a broadcast row index: on CPU several times faster than
    # index_add_ (which adds row by row) or index_put_(accumulate=True).
    buffer.scatter_add_(0, rows.unsqueeze(1).expand_as(values), values)


@contextlib.contextmanager
def updated_in_backward(
    model: nn.Module, optimizers: list[torch.optim.Optimizer], mlps: bool = True
) -> Iterator[list[torch.optim.Optimizer]]:
    """Inside the block, plain SGD updates a DLRM's packed tables and its MLPs during the backward pass.

    Tables: the `SparseSGD` among `optimizers` does the tables' step right where
    their gradient rows appear, in one scatter (`SparseArch.update_in_backward`):
    no per-table sparse gradient is built, accumulated, gathered and scattered again.
    MLPs (unless `mlps` is False, for comparisons): where a `torch.optim.SGD`
    without momentum, weight decay or `maximize` covers all their parameters,
    each layer's weight takes its step in one in-place GEMM as its gradient is
    computed (`DLRM.dense_update_in_backward`, `MLPUpdatedInBackward`): no weight
    gradient is written and read back.
    The result is what `optimizer.step()` would give, provided every backward
    pass is followed by a step (no accumulation over several backwards), as in
    `train_step`. Nothing changes for other models or optimizers, or with
    several processes (their gradients must be exchanged).

    Yields the optimizers `train_step` must still zero and step: all but those
    whose every parameter is updated in the backward pass (their `zero_grad` and
    `step` would find nothing to do, at a cost of tens of microseconds a step).
    That holds while the model stays in training mode on its packed route, as
    `train_epoch` keeps it.
    """
    if distributed.is_active():
        yield optimizers
        return
    sparse_arch = getattr(model, "sparse_arch", None)
    tables = [t.table.weight for t in sparse_arch.tables] if isinstance(sparse_arch, SparseArch) else []
    sparse_sgd = _sole_sgd_over(tables, [o for o in optimizers if isinstance(o, SparseSGD)])
    mlp_parameters = (getattr(model, "mlp_parameters", lambda: None)() if mlps else None) or []
    dense_sgd = _sole_sgd_over(mlp_parameters, [o for o in optimizers if type(o) is torch.optim.SGD])
    if dense_sgd is not None:
        group = dense_sgd.param_groups[0]
        if group["momentum"] or group["weight_decay"] or group["maximize"]:
            dense_sgd = None
    handled: set[int] = set()
    if sparse_sgd is not None:
        sparse_arch.update_in_backward = sparse_sgd
        if sparse_arch.packed and all(g.is_packed() for g in sparse_arch.groups):
            handled.update(id(p) for p in tables)
    if dense_sgd is not None:
        model.dense_update_in_backward = dense_sgd
        handled.update(id(p) for p in mlp_parameters)
    try:
        yield [o for o in optimizers if not all(id(p) in handled for g in o.param_groups for p in g["params"])]
    finally:
        if sparse_sgd is not None:
            sparse_arch.update_in_backward = None
        if dense_sgd is not None:
            model.dense_update_in_backward = None


def _sole_sgd_over(params: list[torch.Tensor], candidates: list[torch.optim.Optimizer]) -> torch.optim.Optimizer | None:
    """The one optimizer of `candidates`, with one parameter group holding every one of `params`; else None."""
    if not params or len(candidates) != 1 or len(candidates[0].param_groups) != 1:
        return None
    return candidates[0] if {id(p) for p in params} <= {id(p) for p in candidates[0].param_groups[0]["params"]} else None


def train_step(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    loss_fn: nn.Module,
    dense: torch.Tensor,
    sparse: torch.Tensor,
    labels: torch.Tensor,
    loss_weight: float = 1.0,
) -> torch.Tensor:
    """One optimisation step on a batch (dense [B, D], sparse [B, F], labels [B]); returns the loss (detached).

    The gradient is that of `loss_weight * loss` (see `distributed.loss_weight`); the loss returned is unweighted.
    """
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(dense, sparse), labels)
    (loss * loss_weight if loss_weight != 1.0 else loss).backward()
    for opt in optimizers:
        opt.step()
    return loss.detach()


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N], probabilities [N]) for a whole split, in row order."""
    was_training = model.training
    model.eval()
    labels, probs = [], []
    for dense, sparse, y in iterate_batches(split, batch_size, shuffle=False):
        probs.append(torch.sigmoid(model(dense, sparse)).numpy())
        labels.append(y.numpy())
    model.train(was_training)
    if not labels:
        return np.zeros(0), np.zeros(0)
    probs = np.concatenate(probs)
    if not np.isfinite(probs).all():
        raise UserError(f"the model predicts NaN on the {split.name} split: its weights are not finite (a diverged training)")
    return np.concatenate(labels), probs


def evaluate(model: nn.Module, split: Split, batch_size: int = 4096) -> dict[str, float]:
    return ctr_metrics(*predict(model, split, batch_size))


def diverged(where: str, loss: float, lr: float) -> UserError:
    return UserError(f"training diverged at {where}: the training loss is {loss}; train again with a learning rate below {lr:g}")


def train_epoch(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    split: Split,
    config: TrainConfig,
    epoch: int,
    label: str = "train",
    local: bool = False,
    batches: tuple[int, int] | None = None,
) -> float:
    """One pass over `split` (with `batches`, `(first, stop)`, only those batches of its order); returns
    the mean training loss.

    With several processes (`dnas_hw.distributed`), each takes its shard of every
    global batch of `config.batch_size` rows, and the loss is the mean over all ranks;
    with `local`, this process passes over the whole split alone.
    """
    model.train()
    loss_fn = nn.BCEWithLogitsLoss()
    total, count = 0.0, 0
    rank, world = (0, 1) if local else distributed.shard()
    first, stop = batches if batches is not None else (0, num_batches(len(split), config.batch_size, drop_last=False))
    label += f" epoch {epoch + 1}/{config.epochs}" + (f" rank {rank}/{world}" if world > 1 else "")
    order = iterate_batches(split, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch, shard=(rank, world),
                            batches=(first, stop))
    with progress(rows_of_batches(split, config.batch_size, first, stop) // world, label, "samples") as bar:
        for step, (dense, sparse, y) in enumerate(order, start=first):
            global_rows = min(config.batch_size, len(split) - step * config.batch_size)
            loss = train_step(model, optimizers, loss_fn, dense, sparse, y, 1.0 if local else distributed.loss_weight(len(y), global_rows))
            value = loss.item()
            if world == 1 and not math.isfinite(value):  # several ranks decide together, at the end of the epoch
                raise diverged(f"step {step + 1} of epoch {epoch + 1}", value, config.lr)
            total += value * len(y)
            count += len(y)
            bar.update(len(y), status=f"loss {total / count:.4f}")
    if world > 1:
        total, count = distributed.all_reduce_sum([total, count])
    return total / max(count, 1)


def rows_of_batches(split: Split, batch_size: int, first: int, stop: int) -> int:
    """The rows in batches `first` to `stop - 1` of a pass over `split` (the last batch may be short)."""
    return max(min(stop * batch_size, len(split)) - first * batch_size, 0)


def start_training(model: nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """Seed every generator from `config.seed` and make `model`'s optimizers: how every training starts."""
    seed_everything(config.seed)
    dense, sparse = split_parameters(model)
    return make_optimizers(dense, sparse, config.optimizer, config.lr)


class Pass:
    """One epoch of `fit`'s training of `model` over `split` (the first), taken in pieces.

    `to(n)` trains the pass's batches up to its n-th, `to(pass.steps)` to its end: a pass taken to step n
    and later to its end leaves the model, bit for bit, where `fit` with one epoch leaves it (the
    batches, the optimizers' state and torch's generator go on where they stopped, whatever ran in
    between). A finalist screened on the pass's first rows then goes on to its whole pass
    (`search.finalists.choose`). In this process alone, like `fit` with `splits`.
    """

    def __init__(self, model: nn.Module, split: Split, config: TrainConfig, label: str = "train"):
        self.model, self.split, self.config, self.label = model, split, config, label
        self.optimizers = start_training(model, config)
        self.generator = torch.get_rng_state()  # torch's generator as this pass left it
        self.steps = num_batches(len(split), config.batch_size, drop_last=False)
        self.done = 0  # batches trained
        self.loss_sum, self.rows = 0.0, 0  # training loss x rows, rows: over the batches trained

    @property
    def train_loss(self) -> float:
        """The mean training loss over the batches trained so far."""
        return self.loss_sum / max(self.rows, 1)

    def to(self, step: int) -> None:
        """Train the batches from the last trained to `step` (at most `steps`)."""
        step = min(step, self.steps)
        if step <= self.done:
            return
        outside = torch.get_rng_state()
        torch.set_rng_state(self.generator)
        try:
            with updated_in_backward(self.model, self.optimizers) as still_stepped:
                loss = train_epoch(self.model, still_stepped, self.split, self.config, 0, label=self.label, local=True,
                                   batches=(self.done, step))
        finally:
            self.generator = torch.get_rng_state()
            torch.set_rng_state(outside)
        rows = rows_of_batches(self.split, self.config.batch_size, self.done, step)
        self.loss_sum, self.rows, self.done = self.loss_sum + loss * rows, self.rows + rows, step


def fit(
    model: nn.Module,
    data: PreparedData | None,
    config: TrainConfig,
    state_path: Path | None = None,
    splits: tuple[Split, Split] | None = None,
) -> list[dict[str, Any]]:
    """Train `model` for `config.epochs` on the train split, validating after each epoch.

    With `splits` (train, validation), on those rows instead (`data` is then not read), in this
    process alone (no other rank takes part: the search's finalists train on the main process).

    With `state_path`, the model, optimizer and history are saved after every
    epoch and a run found there is resumed from its last finished epoch, so a
    killed run loses at most one epoch and ends where an uninterrupted one would.
    With several processes, steps run through DistributedDataParallel and only
    rank 0 saves the state (every rank resumes from it).
    """
    optimizers = start_training(model, config)
    history: list[dict[str, Any]] = []
    if state_path is not None and state_path.exists():
        history = _load_state(state_path, model, optimizers, config)
    local = splits is not None
    train, val = splits if local else (data.split("train"), data.split("val"))
    stepped = model if local else distributed.data_parallel(model)
    for epoch in range(len(history), config.epochs):
        with updated_in_backward(model, optimizers) as still_stepped:
            loss = train_epoch(stepped, still_stepped, train, config, epoch, label=train.name, local=local)
        if not math.isfinite(loss):
            raise diverged(f"epoch {epoch + 1}", loss, config.lr)
        history.append({"epoch": epoch + 1, "train_loss": loss, **{f"val_{k}": v for k, v in evaluate(model, val).items()}})
        if state_path is not None and distributed.is_main():
            _save_state(state_path, model, optimizers, config, history)
        if not local:
            distributed.barrier()
    return history


TRAIN_STATE_FORMAT = "dnas-hw-train-state/1"


def _save_state(path: Path, model: nn.Module, optimizers, config: TrainConfig, history) -> None:
    save_torch_atomic(path, TRAIN_STATE_FORMAT, {
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "history": history,
    })


def _load_state(path: Path, model: nn.Module, optimizers, config: TrainConfig) -> list[dict[str, Any]]:
    state = load_torch(path, TRAIN_STATE_FORMAT, "training state (delete it to start over)")
    if state.get("config") != asdict(config):
        raise UserError(f"{path}: saved with other training options; use a new --out or the same options")
    try:
        model.load_state_dict(state["model"])
        for opt, s in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)
        return list(state["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"{path}: training state does not fit this run ({type(e).__name__}); delete it to start over") from None


# --------------------------------------------------------------------------- a run folder


def train_arch(
    data_dir: str | Path,
    arch,
    out: str | Path,
    config,
    resume: bool = False,
    force: bool = False,
) -> dict:
    """Train `arch` on `data_dir`; writes `out/model.pt`, `out/metrics.json`, `out/train_log.csv`.

    Returns the metrics. Shared by the CLI, the search's retraining and the pipeline.
    `arch` may be of any model family (`dnas_hw.family`). Under torchrun every rank
    trains its shard (`dnas_hw.distributed`) and only rank 0 writes (and locks `out`).
    The output is checked for writability and the training for memory before any
    work, and a run that fails before writing anything leaves no folder behind.
    """
    out = Path(out)
    data = PreparedData.open(data_dir)
    arch.check_data(data.num_dense, data.num_sparse, where=str(data_dir))
    state = out / "train_state.pt"
    if (out / "model.pt").exists() and not force:
        raise UserError(f"{out}/model.pt already exists (use --force to retrain)")
    if state.exists() and not (resume or force):
        raise UserError(f"{out} holds an unfinished run: use --resume to continue it or --force to restart")
    check_writable(out, "folder")
    require_memory(training_bytes(arch, config.batch_size, config.optimizer),
                   f"training a model of {arch.num_params():,} parameters at batch size {config.batch_size}")
    with (output_lock(out) if distributed.is_main() else contextlib.nullcontext()), removed_if_left_empty(out):
        return _train(data, arch, out, state, config, resume, force)


def _train(data, arch, out: Path, state: Path, config, resume: bool, force: bool) -> dict:
    import pandas as pd  # here: only a finished run writes its log, and pandas takes a while to import

    if force and state.exists() and not resume and distributed.is_main():
        state.unlink()
    out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()  # every rank sees the state file as rank 0 left it

    model = build_model(arch, seed=config.seed)
    start = time.perf_counter()
    history = fit(model, data, config, state_path=state)
    elapsed = time.perf_counter() - start
    metrics = {
        "val": evaluate(model, data.split("val")),
        "test": evaluate(model, data.split("test")),
        "train": {"loss": history[-1]["train_loss"], "epochs": config.epochs, "elapsed_s": round(elapsed, 3)},
    }
    if distributed.is_main():
        save_checkpoint(out / "model.pt", model, extra={"data_meta": {k: data.meta[k] for k in ("num_dense", "num_sparse", "cardinalities")}})
        write_text_atomic(out / "train_log.csv", pd.DataFrame(history).to_csv(index=False))
        write_json_atomic(out / "metrics.json", metrics)
        state.unlink(missing_ok=True)
    distributed.barrier()
    return metrics
