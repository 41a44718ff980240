"""What a run ships: the smallest model that is as accurate as what the user started with.

    choice = choose(candidates, original_ap50=0.192, max_ap_drop=0.01)

A pruned candidate qualifies when its held-out AP50 is at least the original unpruned model's
minus `max_ap_drop`; the qualifying one with the fewest FLOPs ships (the higher AP50 breaks a
tie). When none qualifies, the run ships the most accurate unpruned model it has (the
person-tuned one where it scores higher than the original) and says so: a pruning tool must
never hand over a broken model without a word.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Candidate:
    name: str  # e.g. "base", "specialised", "prune cycle 2"
    model: str  # model folder
    flops: int
    ap50: float
    pruned: bool
    ap50_95: float | None = None


@dataclass
class Choice:
    shipped: Candidate
    holds: bool  # a pruned model met the accuracy rule
    reason: str
    floor: float  # the AP50 a pruned model had to reach

    def as_dict(self) -> dict[str, Any]:
        return {
            "shipped": asdict(self.shipped),
            "holds": self.holds,
            "reason": self.reason,
            "ap50_floor": self.floor,
        }


def choose(candidates: list[Candidate], original_ap50: float, max_ap_drop: float) -> Choice:
    """The shipping rule (module doc). `candidates` must hold at least one unpruned model."""
    unpruned = [c for c in candidates if not c.pruned]
    if not unpruned:
        raise ValueError("ship: no unpruned model among the candidates to fall back on")
    floor = original_ap50 - max_ap_drop
    held = [c for c in candidates if c.pruned and c.ap50 >= floor]
    if held:
        best = min(held, key=lambda c: (c.flops, -c.ap50))
        ref = max(unpruned, key=lambda c: c.flops)
        why = (
            f"{best.name}: {best.flops / ref.flops:.3f}x FLOPs, AP50 {best.ap50:.4f} >= "
            f"{floor:.4f} (original {original_ap50:.4f} - {max_ap_drop})"
        )
        return Choice(best, True, why, floor)
    fallback = max(unpruned, key=lambda c: c.ap50)
    pruned = [c for c in candidates if c.pruned]
    best_cut = max(pruned, key=lambda c: c.ap50) if pruned else None
    why = (
        f"no pruned model holds AP50 >= {floor:.4f} (original {original_ap50:.4f} - {max_ap_drop})"
    )
    if best_cut is not None:
        why += f"; the best cut, {best_cut.name}, scores {best_cut.ap50:.4f}"
    why += f": shipping the unpruned {fallback.name} model (AP50 {fallback.ap50:.4f})"
    return Choice(fallback, False, why, floor)
