"""`SearchConfig`: every knob of the search, with the reasons for its defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dnas_hw.errors import UserError
from dnas_hw.train import OPTIMIZERS
from search.cost import PENALTY_FORMS

SAMPLING_MODES = ("per-batch", "per-sample")
WEIGHT_SAMPLING = ("uniform", "logits")


def knob(default: Any, help: str, **cli: Any) -> Any:
    """A `SearchConfig` field with its command-line help; `cli` may name `choices` or a `flags` pair
    (`dnas_hw.app.cli_types.config_options` makes the options, so a new field is added here only)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class SearchConfig:
    # Epochs of the schedule (temperature, warm-up); with `one_pass` each reads a quarter of the
    # weight part. Four let the argmax settle on the benchmark data.
    epochs: int = knob(4, "Epochs of the search (each a share of the weight part with --one-pass, else a pass over it).")
    seed: int = knob(0, "Seed of the weights, the data order and the Gumbel samples.")
    # Training batch size of the supernet; the serving batch size the LUT is read
    # at is a separate argument of `run_search`.
    train_batch_size: int = knob(256, "Supernet training batch size (the global batch under torchrun).")
    # Gumbel-softmax temperature: init * decay**epoch. FBNet's 5 suits ~90
    # epochs; in 4 epochs the straight-through gradient (scaled by 1/tau) at
    # tau 5 -> 1 left the logits almost uniform (entropy 1.448 -> 1.256 nats on
    # 200k rows), so start at 1 and end near 0.34.
    temperature_init: float = knob(1.0, "Gumbel-softmax temperature of the first epoch.")
    temperature_decay: float = knob(0.7, "Per-epoch factor of the temperature.")
    # CTR models overfit from their second pass over the data (their tables memorise the ids
    # they have seen), which is why `dnas-hw train` trains one epoch. On 1M planted rows a
    # supernet trained over the whole weight part every epoch reached a training loss of 0.380
    # in its fourth epoch (the retrained reference's validation loss: 0.437), and a second
    # warm-up pass turned the ranking of 12 archs (Kendall tau against retraining) from 0.545
    # to -0.03. `one_pass` trains it as it will be retrained, each row once (epoch e's weight
    # steps read their own 1/epochs of the weight part; the arch steps read the whole arch
    # part every epoch). Off by default: the supernet then gets a quarter of the steps, and with
    # today's other defaults two whole searches retrained to 0.4327 and 0.4562 test logloss,
    # against 0.4256 and 0.4242 with `tables_once` (below), which keeps the MLPs' later passes.
    one_pass: bool = knob(False, "The weights see each row once in the whole search (epoch e reads its own 1/epochs of the weight part); off: every epoch passes over all of it.", flags="--one-pass/--every-epoch")
    # The tables (the sparse-gradient weights) train on the first pass over the weight part only;
    # later epochs train the MLPs on them as they are. A full table of a high-cardinality feature
    # memorises the rows it sees again: after four passes (1M planted rows) the supernet scored the
    # DLRM reference's choices 0.034 held-out logloss worse with the noise features' full tables
    # than with them hashed, where retraining (one pass) puts the two level (0.4358, 0.4369), and
    # the search hashed every large table. With `one_pass` every epoch trains them (its rows are new).
    # Measured in whole searches (two seeds, 1x the reference's latency): 0.4256 and 0.4242 test
    # logloss against 0.4498 and 0.4348 with the tables trained every epoch (reference: 0.4358).
    tables_once: bool = knob(True, "The tables train on the first pass over the weight rows only (later epochs train the MLPs on them); off: every epoch.", flags="--tables-once/--tables-every-epoch")
    # Epochs of weight training only (uniform logits) before the logits move:
    # candidates compared before any of them has learned say nothing.
    warmup_epochs: int = knob(1, "Weight-only epochs (uniform logits) before the logits move.")
    # The supernet's weights train with the recipe archs are retrained with (`dnas-hw train`'s
    # default), so that it ranks candidates as retraining will.
    weight_optimizer: str = knob("adam", "Optimizer of the supernet's weights; use the one the derived arch is retrained with.", choices=OPTIMIZERS)
    weight_lr: float = knob(1e-3, "Learning rate of the supernet's weights.")
    # The sandwich rule (BigNAS): weight steps cycle through the largest arch, a sampled one,
    # the smallest, a sampled one, so the widest layers and longest dims are trained as often as
    # the narrow ones however the logits lean (table sizes: see `inherit_tables`). Choices
    # without a size order (the interaction kind) are sampled in those steps too. Off by default:
    # the largest arch is far from any budget's, and its steps pull the shared weights its way
    # (benchmarks/RESULTS.md, `supernet_interference.py`: after one warm-up epoch on 150k planted
    # rows, every choice drawn, the DLRM reference's choices scored 0.5785 validation logloss with it,
    # 0.5595 without; whole searches at the reference's latency with 4 paths a step picked `cat`
    # with it and `dot`, the kind that retrains better, without).
    # Table sizes are decided on the trained full tables: the weight steps hold every table at its
    # largest candidate, and a smaller candidate is the id-frequency-weighted hashed image of the
    # full one (`SupernetBase.inherit`), re-derived as the full table trains; an arch step then
    # prices what hashing the trained table loses. With own rows per candidate sampled in weight
    # steps, a full table got a fraction of the updates and the shared MLP learned on hashed
    # inputs: on 1M planted rows, 800 steps with only the table sizes sampled left the supernet at
    # the DLRM reference's choices at 0.603 validation logloss, 0.495 with the full tables held.
    inherit_tables: bool = knob(True, "Smaller table candidates are the hashed image of the trained full table (the weights train the full one), not rows of their own.")
    # In the sandwich's largest steps, the supernet's `alignment_loss` (DLRM: each shallower
    # bottom depth's closing layer learns to give the deepest one's output, which every
    # embedding is dotted with), so that the depths' outputs share one space.
    # Off by default: it helped the reference's choices in 800 steps with only the bottom sampled
    # (0.532 against 0.573), but the whole search with it and `one_pass` did worse than without.
    align_heads: bool = knob(False, "In largest steps, the shallower depths' closing layers learn the deepest's output (needs --sandwich).", flags="--align-heads/--no-align-heads")
    # After the search, the derived arch moves one slot at a time to the neighbour the trained
    # supernet scores best on held-out rows, within the band (`search.refine`). The logits learn
    # from one-batch gradient estimates and leave a slot whose candidates differ by less than their
    # noise (or whose straight-through estimate is biased) near a coin toss: on 1M planted rows
    # two seeds at one budget both ended at D 16 (p 0.72 and 0.97), where the supernet scored D 64
    # 0.0074 lower in held-out logloss.
    refine: bool = knob(True, "After the search, move the derived arch to the one-slot neighbour the supernet scores best on held-out rows, within the budget, while that gains.", flags="--refine/--no-refine")
    # Then every table size and dim the budget allows goes to its largest choice unless the supernet
    # scores that worse (`search.refine.keep_capacity`): a hashed table or a truncated vector only loses
    # what the full one holds, and the supernet favours what learns fastest; on planted 150k rows, where the
    # table sizes cost next to nothing in latency, searches hashed tables of features that carry signal.
    keep_capacity: bool = knob(True, "After the refinement, move each table size and dim to its largest choice where the budget allows and the supernet sees no loss.", flags="--keep-capacity/--no-keep-capacity")
    # Then the finalists (`search.finalists`): the search's arch, that arch with its interaction kind,
    # width or an MLP depth switched (the choices the supernet judges through shared layers that read
    # another input under each), and the family's hand-designed incumbent (DLRM's Kaggle reference)
    # settled as the argmax is, each trained one pass over the weight rows; the lowest logloss on the
    # arch rows is returned. On 1M planted rows `dot` against `cat` was a coin toss in the supernet and
    # cost up to 0.04 test logloss; a one-pass training costs a few percent of the supernet's epochs.
    finalists: bool = knob(True, "After the derivation, train the finalists (the search's arch, it with another interaction kind, width or MLP depth, the incumbents) one pass each and return the best on the arch rows.", flags="--finalists/--no-finalists")
    # A front trains the finalists of every point; screening them (successive halving's first rung:
    # all on the first share of the weight rows, the best `finalist_keep` on all of them) cut a 4-point
    # front's finalists on 1M planted rows from ~2,900 s (whole passes) to 1,261 s. `search.finalists`
    # says why a quarter and at least 150,000 rows: with fewer, the archs that learn fastest lead.
    # Unset: a front screens on 1/4 (`search.finalists.FRONT_SCREEN`), a single search does not.
    finalist_screen: float | None = knob(None, "Screen the finalists on this share of the weight rows (at least 150,000) first and train only the best --finalist-keep on all of them (1: no screening) [unset: 0.25 in a front of several budgets, 1 in a single search].")
    finalist_keep: int = knob(2, "Finalists kept after the screening, each then trained on all the weight rows.")
    # Which arch a weight step trains (between the sandwich's extremes): one drawn uniformly
    # (single-path one-shot NAS, SPOS / once-for-all), or one drawn from the arch logits (FBNet).
    # From the logits, the choices the logits favour early are the ones trained, so they look
    # better still (rich get richer) and the rest keep their start: on 1M planted rows, after a
    # search sampling from the logits, the supernet scored the DLRM reference at 0.503 held-out
    # logloss (retrained: 0.436) and a top layer of 512 worse than one of 128 (0.444 vs 0.434).
    weight_sampling: str = knob("uniform", "The arch a weight step trains: drawn uniformly, or from the arch logits.", choices=WEIGHT_SAMPLING)
    sandwich: bool = knob(False, "Weight steps cycle through the largest arch, a sampled one, the smallest, a sampled one.", flags="--sandwich/--no-sandwich")
    # Archs per weight step: each of `paths_per_step` archs is drawn and run on the whole batch, and
    # the step follows their mean gradient (BigNAS trains several children per batch). One arch per
    # step moves the shared weights towards that arch and the next undoes part of it; the mean over
    # several is a step that serves them all. On 150k planted rows, after one warm-up epoch with
    # every choice drawn, one path a step left the supernet no better than the base rate (AUC
    # 0.55-0.60 at the DLRM reference's choices and at random archs); four gave 0.65-0.67 at the
    # reference and 0.59-0.64 at random archs (`supernet_interference.py`'s section of
    # benchmarks/RESULTS.md). A weight step costs that many single-arch steps.
    paths_per_step: int = knob(4, "Archs drawn per weight step, each run on the whole batch; the step follows their mean gradient.")
    # Clip the dense weights' gradient norm in weight steps (None: no clipping). With the
    # supernet's He-normal start (search/mixed.py) and a new random arch every batch, SGD at
    # 0.1 went non-finite at step 31 on synth1m; clipped at 1.0 it stayed finite (1,500 steps).
    weight_grad_clip: float | None = knob(1.0, "Clip the weights' gradient norm at this value in weight steps.")
    # Adam on the logits (FBNet, DARTS). At 0.01 the logits barely moved in 4
    # epochs on 200k rows (~375 arch steps); 0.05 (with the temperature below)
    # brought the mean slot entropy from 1.45 to 0.10 nats.
    arch_lr: float = knob(0.05, "Adam learning rate of the architecture logits.")
    # Weights train on the first 80% of the train split, logits on the rest.
    split_fraction: float = knob(0.8, "Share of the train split the weights train on; the logits train on the rest.")
    sampling: str = knob("per-batch", "One Gumbel draw per batch or per sample.", choices=SAMPLING_MODES)
    # Hard (straight-through) samples: one-hot forward, soft gradient. Weight steps
    # then run only the sampled arch (single path), so they cost an average arch,
    # not the largest; the soft mixture is the alternative (--soft).
    hard: bool = knob(True, "Straight-through one-hot samples (single-path weight steps) or soft mixtures.", flags="--hard/--soft")
    # With True, arch steps take the gradient of the enumerated groups' logits (DLRM's
    # interaction kind; `SupernetBase.enumerated_groups`) exactly, by running each candidate,
    # instead of straight-through. Off by default: it makes arch steps dearer, and it follows
    # the supernet's expected loss, which is only as good as the supernet's ranking.
    enumerate_groups: bool = knob(False, "Arch steps: the interaction kind's logit gradient by running every kind (exact), or straight-through.", flags="--enumerate/--straight-through")
    # The budget term; see `search.cost.budget_penalty`. `band` is a signed
    # Lagrange multiplier from two-sided dual ascent: it pushes the derived arch
    # down over the target and up under the floor, so the search itself lands in
    # [floor, 1] x budget (the one-sided `hinge` left small archs to the
    # projection). The paper forms are for comparison.
    penalty: str = knob("band", "Budget term: band (two-sided), hinge (pushes down only), linear-log, fbnet.", choices=PENALTY_FORMS)
    fbnet_beta: float = knob(0.6, "Exponent of the fbnet penalty.")
    # The starting multiplier and its additive dual-ascent step (per arch step,
    # times how far the derived arch is outside the band, as a share of the budget).
    multiplier_init: float = knob(0.0, "Starting budget multiplier.")
    multiplier_lr: float = knob(0.2, "Dual-ascent step of the budget multiplier.")
    # Proportional term of the controller (multiplier = integral + gain * error):
    # with the integral alone the argmax overshot the band back and forth on the
    # toy LUT (1.08 -> 0.73 -> 1.08 of the budget); gain 5 settled it inside.
    multiplier_gain: float = knob(5.0, "Proportional gain of the budget controller.")
    # The controller aims the derived arch at target * budget: a little under,
    # so the argmax, which moves in steps, stays inside the budget.
    target: float = knob(0.95, "The controller aims the derived arch at this share of the budget.")
    # The derived arch must use at least this share of the budget.
    floor: float = knob(0.8, "The derived arch must use at least this share of the budget.")
    # Optional extra terms, as fractions of the largest arch's value.
    flops_weight: float = knob(0.0, "Weight of an expected-FLOPs term (a fraction of the largest arch's).")
    param_bytes_weight: float = knob(0.0, "Weight of an expected parameter-bytes term.")
    stop_after: int | None = knob(None, "Stop after this many epochs, as if killed (tests of --resume).")

    def __post_init__(self) -> None:
        def bad(what: str) -> None:
            raise UserError(f"search config: {what}")

        if self.epochs < 1 or self.train_batch_size < 1 or self.paths_per_step < 1:
            bad("epochs, train_batch_size and paths_per_step must be positive")
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
        if self.weight_sampling not in WEIGHT_SAMPLING:
            bad(f"weight_sampling {self.weight_sampling!r}: use one of {list(WEIGHT_SAMPLING)}")
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
        if self.finalist_screen is not None and not 0 < self.finalist_screen <= 1:
            bad(f"finalist_screen must lie in (0, 1], got {self.finalist_screen}")
        if self.finalist_keep < 1:
            bad("finalist_keep must be positive")
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
