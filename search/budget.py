"""The budget controller: the user gives a latency budget, the search finds the multiplier.

Dual ascent in log space: after each architecture step the multiplier is
scaled by `exp(lr * error)`, where error is `derived / budget - target` above
the target, `derived / budget - floor` below the floor and 0 in between;
`derived` is the predicted latency of the current argmax arch. Over target,
the latency term weighs more; under the floor, less, so the task loss (which
favours bigger models) pulls the arch back up. Reacting to the derived arch, not to the expected
latency, is what makes the arch that is finally returned land near the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_MULTIPLIER, MAX_MULTIPLIER = 1e-4, 1e4


@dataclass
class BudgetController:
    budget_us: float
    target: float  # the derived arch is pushed down above target * budget ...
    floor: float  # ... and the push relaxes below floor * budget
    lr: float
    multiplier: float

    def update(self, derived_us: float) -> float:
        """One dual-ascent step from the derived arch's predicted latency; returns the new multiplier."""
        ratio = derived_us / self.budget_us
        # A dead band: inside [floor, target] the multiplier holds, so an arch
        # that has landed is not pushed out again by a decaying multiplier.
        error = ratio - self.target if ratio > self.target else min(ratio - self.floor, 0.0)
        log_m = math.log(max(self.multiplier, MIN_MULTIPLIER)) + self.lr * error
        self.multiplier = min(max(math.exp(log_m), MIN_MULTIPLIER), MAX_MULTIPLIER)
        return self.multiplier

    def state_dict(self) -> dict:
        return {"multiplier": self.multiplier}

    def load_state_dict(self, state: dict) -> None:
        self.multiplier = float(state["multiplier"])
