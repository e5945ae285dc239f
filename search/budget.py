"""The budget controller: the user gives a latency budget, the search finds the multiplier.

Dual ascent on the *derived* (argmax) arch's predicted latency, which is the
arch that will be returned. After each architecture step the multiplier moves
by `lr * error`, where error is `derived / budget - target` above the target,
`derived / budget - floor` below the floor and 0 inside `[floor, target]`
(a dead band: an arch that has landed is not pushed out again).

`two_sided` (the default `band` penalty): the multiplier is a signed Lagrange
multiplier. Over the target it grows and the latency term pushes the logits
down; under the floor it goes negative and the same term *rewards* latency, so
the search itself grows an arch that is too small. One-sided forms (`hinge`,
`linear-log`, `fbnet`) keep it at or above 0: below the floor only the task
loss pulls the arch back up. The step is additive (not in log space) so the
multiplier can cross zero.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MULTIPLIER = 1e4


@dataclass
class BudgetController:
    budget_us: float
    target: float  # the derived arch is pushed down above target * budget ...
    floor: float  # ... and up (two-sided) or released (one-sided) below floor * budget
    lr: float
    multiplier: float
    two_sided: bool = True
    # Proportional gain: the multiplier used is the integral plus gain * error, so
    # leaving the band is answered at once, not after the integral has wound up
    # (without it the argmax overshoots the band back and forth; measured on the toy LUT).
    gain: float = 0.0
    integral: float | None = None

    def __post_init__(self) -> None:
        if self.integral is None:
            self.integral = self.multiplier

    def error(self, derived_us: float) -> float:
        """How far the derived arch is outside [floor, target] x budget, as a share of the budget (0 inside)."""
        ratio = derived_us / self.budget_us
        return ratio - self.target if ratio > self.target else min(ratio - self.floor, 0.0)

    def update(self, derived_us: float) -> float:
        """One dual-ascent step from the derived arch's predicted latency; returns the new multiplier."""
        low = -MAX_MULTIPLIER if self.two_sided else 0.0
        error = self.error(derived_us)
        self.integral = min(max(self.integral + self.lr * error, low), MAX_MULTIPLIER)
        self.multiplier = min(max(self.integral + self.gain * error, low), MAX_MULTIPLIER)
        return self.multiplier

    def state_dict(self) -> dict:
        return {"multiplier": self.multiplier, "integral": self.integral}

    def load_state_dict(self, state: dict) -> None:
        self.multiplier = float(state["multiplier"])
        self.integral = float(state.get("integral", self.multiplier))
