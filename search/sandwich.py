"""The sandwich rule (BigNAS): some weight steps train the largest or the smallest arch.

`SCHEDULE` is the role of each weight step in turn. In a "largest" or
"smallest" step every slot whose choices have a size order takes its largest
or smallest choice ("skip" counting as the smallest); the groups whose
candidates are different ops rather than sizes (`SupernetBase.enumerated_groups`,
DLRM's interaction kind) keep their sampled choice. One arch per step, not
BigNAS's three in one, so a step still costs one arch.
"""

from __future__ import annotations

import torch

from dnas_hw.space import SKIP, Choice
from search.layout import Layout

SCHEDULE = ("largest", "sampled", "smallest", "sampled")


def choice_size(choice: Choice) -> float:
    """A choice's place in its slot's size order ("skip" smallest); a choice without one is an error."""
    if choice == SKIP:
        return float("-inf")
    if isinstance(choice, bool) or not isinstance(choice, (int, float)):
        raise TypeError(f"sandwich rule: choice {choice!r} has no size; name its group in enumerated_groups")
    return float(choice)


def extreme_probs(layout: Layout, unordered: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
    """{"largest": {group: one-hot [rows, width]}, "smallest": {...}} for every group not in `unordered`."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for role, pick in (("largest", max), ("smallest", min)):
        probs = {}
        for g, grp in layout.groups.items():
            if g in unordered:
                continue
            t = torch.zeros(len(grp.slots), grp.width)
            for i, choices in enumerate(grp.choices):
                t[i, choices.index(pick(choices, key=choice_size))] = 1.0
            probs[g] = t
        out[role] = probs
    return out


def role(step: int) -> str:
    """Weight step `step`'s role: "largest", "sampled" or "smallest"."""
    return SCHEDULE[step % len(SCHEDULE)]


def sandwich_probs(step: int, sampled: dict[str, torch.Tensor], extremes: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The probabilities of weight step `step`: `sampled`, or in a largest / smallest step the
    extremes' one-hots in place of the ordered groups' samples."""
    if role(step) == "sampled":
        return sampled
    return {g: extremes[role(step)].get(g, p) for g, p in sampled.items()}
