"""`SearchConfig`: every knob of the search, with the reasons for its defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from dnas_hw.errors import UserError
from dnas_hw.train import OPTIMIZERS
from search.cost import PENALTY_FORMS

SAMPLING_MODES = ("per-batch", "per-sample")


@dataclass(frozen=True)
class SearchConfig:
    # Passes over the weight part of the train split. Four is enough for the
    # argmax to settle on the benchmark data (the temperature is ~1 by then) and
    # keeps the default space on 1M rows well inside 15 minutes on 2 cores.
    epochs: int = 4
    seed: int = 0
    # Training batch size of the supernet; the serving batch size the LUT is read
    # at is a separate argument of `run_search`.
    train_batch_size: int = 256
    # Gumbel-softmax temperature: init * decay**epoch. FBNet's 5 suits ~90
    # epochs; in 4 epochs the straight-through gradient (scaled by 1/tau) at
    # tau 5 -> 1 left the logits almost uniform (entropy 1.448 -> 1.256 nats on
    # 200k rows), so start at 1 and end near 0.34.
    temperature_init: float = 1.0
    temperature_decay: float = 0.7
    # Epochs of weight training only (uniform logits) before the logits move:
    # candidates compared before any of them has learned say nothing.
    warmup_epochs: int = 1
    weight_optimizer: str = "sgd"
    weight_lr: float = 0.1  # DLRM's Kaggle recipe, as `dnas-hw train`
    # Clip the dense weights' gradient norm in weight steps (None: no clipping). With the
    # supernet's He-normal start (search/mixed.py) and a new random arch every batch, SGD at
    # 0.1 went non-finite at step 31 on synth1m; clipped at 1.0 it stayed finite (1,500 steps).
    weight_grad_clip: float | None = 1.0
    # Adam on the logits (FBNet, DARTS). At 0.01 the logits barely moved in 4
    # epochs on 200k rows (~375 arch steps); 0.05 (with the temperature below)
    # brought the mean slot entropy from 1.45 to 0.10 nats.
    arch_lr: float = 0.05
    # Weights train on the first 80% of the train split, logits on the rest.
    split_fraction: float = 0.8
    sampling: str = "per-batch"
    # Hard (straight-through) samples: one-hot forward, soft gradient. Weight steps
    # then run only the sampled arch (single path), so they cost an average arch,
    # not the largest; the soft mixture is the alternative (--soft).
    hard: bool = True
    # With True, arch steps take the gradient of the enumerated groups' logits (DLRM's
    # interaction kind; `SupernetBase.enumerated_groups`) exactly, by running each candidate,
    # instead of straight-through. Off by default: measured on the planted data it chose cat
    # as straight-through does (p(dot) 0.5 -> 0.007 in the first arch epoch against 0.025),
    # because the supernet itself scores cat better in expectation over the sampled archs
    # (docs/search.md, "Enumerated choices"), and it makes arch steps dearer.
    enumerate_groups: bool = False
    # The budget term; see `search.cost.budget_penalty`. `band` is a signed
    # Lagrange multiplier from two-sided dual ascent: it pushes the derived arch
    # down over the target and up under the floor, so the search itself lands in
    # [floor, 1] x budget (the one-sided `hinge` left small archs to the
    # projection). The paper forms are for comparison.
    penalty: str = "band"
    fbnet_beta: float = 0.6
    # The starting multiplier and its additive dual-ascent step (per arch step,
    # times how far the derived arch is outside the band, as a share of the budget).
    multiplier_init: float = 0.0
    multiplier_lr: float = 0.2
    # Proportional term of the controller (multiplier = integral + gain * error):
    # with the integral alone the argmax overshot the band back and forth on the
    # toy LUT (1.08 -> 0.73 -> 1.08 of the budget); gain 5 settled it inside.
    multiplier_gain: float = 5.0
    # The controller aims the derived arch at target * budget: a little under,
    # so the argmax, which moves in steps, stays inside the budget.
    target: float = 0.95
    # The derived arch must use at least this share of the budget.
    floor: float = 0.8
    # Optional extra terms, as fractions of the largest arch's value.
    flops_weight: float = 0.0
    param_bytes_weight: float = 0.0
    # Stop after this many epochs (tests of resume); None runs all.
    stop_after: int | None = None

    def __post_init__(self) -> None:
        def bad(what: str) -> None:
            raise UserError(f"search config: {what}")

        if self.epochs < 1 or self.train_batch_size < 1:
            bad("epochs and train_batch_size must be positive")
        if not 0 <= self.warmup_epochs < self.epochs:
            bad(f"warmup_epochs must lie in [0, epochs), got {self.warmup_epochs}")
        if self.temperature_init <= 0 or not 0 < self.temperature_decay <= 1:
            bad("temperature_init must be positive and temperature_decay in (0, 1]")
        if self.weight_optimizer not in OPTIMIZERS:
            bad(f"weight_optimizer {self.weight_optimizer!r}: use one of {list(OPTIMIZERS)}")
        if self.weight_lr <= 0 or self.arch_lr <= 0 or self.multiplier_lr < 0 or self.multiplier_init < 0 or self.multiplier_gain < 0:
            bad("learning rates must be positive, the starting multiplier and its gain non-negative")
        if not 0 < self.split_fraction < 1:
            bad(f"split_fraction must lie in (0, 1), got {self.split_fraction}")
        if self.sampling not in SAMPLING_MODES:
            bad(f"sampling {self.sampling!r}: use one of {list(SAMPLING_MODES)}")
        if self.penalty not in PENALTY_FORMS:
            bad(f"penalty {self.penalty!r}: use one of {list(PENALTY_FORMS)}")
        if not 0 < self.floor <= self.target <= 1:
            bad("need 0 < floor <= target <= 1")
        if self.flops_weight < 0 or self.param_bytes_weight < 0:
            bad("flops_weight and param_bytes_weight must be non-negative")
        if self.weight_grad_clip is not None and self.weight_grad_clip <= 0:
            bad("weight_grad_clip must be positive")
        if self.stop_after is not None and self.stop_after < 1:
            bad("stop_after must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"search config: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
