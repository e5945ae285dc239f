"""The budget controller: the user gives a latency budget, the search finds the multiplier.

Dual ascent in log space: after each architecture step the multiplier is
scaled by `exp(lr * (derived / budget - target))`, where `derived` is the
predicted latency of the current argmax arch. Over target, the latency term
weighs more; under it, less, so the task loss (which favours bigger models)
pulls the arch back up. Reacting to the derived arch, not to the expected
latency, is what makes the arch that is finally returned land near the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_MULTIPLIER, MAX_MULTIPLIER = 1e-4, 1e4


@dataclass
class BudgetController:
    budget_us: float
    target: float  # fraction of the budget the derived arch is aimed at
    lr: float
    multiplier: float

    def update(self, derived_us: float) -> float:
        """One dual-ascent step from the derived arch's predicted latency; returns the new multiplier."""
        error = derived_us / self.budget_us - self.target
        log_m = math.log(max(self.multiplier, MIN_MULTIPLIER)) + self.lr * error
        self.multiplier = min(max(math.exp(log_m), MIN_MULTIPLIER), MAX_MULTIPLIER)
        return self.multiplier

    def state_dict(self) -> dict:
        return {"multiplier": self.multiplier}

    def load_state_dict(self, state: dict) -> None:
        self.multiplier = float(state["multiplier"])
