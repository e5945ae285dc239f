"""How a space's slots map onto grouped architecture-logit tensors.

Slots of one kind share a tensor, one row per slot, so sampling and the cost
recursion run on a handful of tensors instead of ~60 small ones. The kind is
the slot name's prefix before the first "." (any family: `cross.2` belongs to
group `cross`, `emb_dim` alone to group `emb_dim`); groups keep the order in
which `space.slots()` first names them. A DLRM space gives

    bottom           [bottom_layers, len(bottom_widths)]
    bottom_depth     [1, bottom_layers + 1]
    emb_dim          [F, len(emb_dims)]
    emb_rows         [F, R_max]      a feature with fewer distinct table sizes is padded;
                                     `valid` marks the real entries (padding gets -inf logits)
    interaction      [1, len(interactions)]
    interaction_dim  [1, len(interaction_dims)]
    top              [top_layers, len(top_widths)]
    top_depth        [1, top_layers + 1]

Within a row, choices keep the order of `space.slots()` (a family with per-layer
skips, like DCN, puts "skip" last).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dnas_hw.space import Choice


@dataclass(frozen=True)
class Group:
    name: str
    slots: tuple[str, ...]  # one per row
    choices: tuple[tuple[Choice, ...], ...]  # per row, unpadded

    @property
    def width(self) -> int:
        return max(len(c) for c in self.choices)

    def valid(self) -> torch.Tensor:
        """bool [rows, width]: which entries are real choices."""
        v = torch.zeros(len(self.slots), self.width, dtype=torch.bool)
        for i, c in enumerate(self.choices):
            v[i, : len(c)] = True
        return v


class Layout:
    """The grouping of one space's slots; converts between tensors and `{slot: choice}`."""

    def __init__(self, space):
        """`space`: any family's space (its `slots()` are all this reads)."""
        self.space = space
        by_prefix: dict[str, list] = {}
        for slot in space.slots():
            by_prefix.setdefault(slot.name.split(".")[0], []).append(slot)
        self.groups = {g: Group(g, tuple(s.name for s in slots), tuple(s.choices for s in slots)) for g, slots in by_prefix.items()}
        self._where = {s: (g.name, i) for g in self.groups.values() for i, s in enumerate(g.slots)}

    def slot_names(self) -> list[str]:
        return [s.name for s in self.space.slots()]

    def init_logits(self) -> dict[str, torch.Tensor]:
        """Uniform logits (zeros), -inf on padding."""
        return {g: torch.zeros(grp.valid().shape).masked_fill(~grp.valid(), float("-inf")) for g, grp in self.groups.items()}

    def choices(self, indices: dict[str, torch.Tensor]) -> dict[str, Choice]:
        """`{group: LongTensor [rows]}` of choice indices -> `{slot: choice}`."""
        out = {}
        for g, grp in self.groups.items():
            for i, slot in enumerate(grp.slots):
                out[slot] = grp.choices[i][int(indices[g][i])]
        return {s: out[s] for s in self.slot_names()}

    def indices(self, choices: dict[str, Choice]) -> dict[str, torch.Tensor]:
        """`{slot: choice}` -> `{group: LongTensor [rows]}`."""
        return {
            g: torch.tensor([grp.choices[i].index(choices[s]) for i, s in enumerate(grp.slots)], dtype=torch.long)
            for g, grp in self.groups.items()
        }

    def one_hot(self, choices: dict[str, Choice], dtype=torch.float64) -> dict[str, torch.Tensor]:
        """Probabilities that put all mass on `choices`: `{group: [rows, width]}`."""
        out = {}
        for g, idx in self.indices(choices).items():
            t = torch.zeros(len(idx), self.groups[g].width, dtype=dtype)
            t[torch.arange(len(idx)), idx] = 1.0
            out[g] = t
        return out

    def probs_dict(self, probs: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """`{group: [rows, width]}` -> `{slot: {choice: p}}` (choices as strings, JSON keys)."""
        out = {}
        for g, grp in self.groups.items():
            for i, slot in enumerate(grp.slots):
                out[slot] = {str(c): float(probs[g][i, j]) for j, c in enumerate(grp.choices[i])}
        return {s: out[s] for s in self.slot_names()}

    def where(self, slot: str) -> tuple[str, int]:
        """(group, row) of a slot."""
        return self._where[slot]
