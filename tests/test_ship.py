"""The shipping rule: the smallest model as accurate as what the user had, or say so."""

from __future__ import annotations

import pytest

from compress.ship import Candidate, choose


def _c(name: str, flops: int, ap50: float, pruned: bool = True) -> Candidate:
    return Candidate(name, f"runs/x/{name}", flops, ap50, pruned)


BASE = _c("base", 100, 0.20, pruned=False)
TUNED = _c("specialised", 100, 0.30, pruned=False)


def test_smallest_model_that_holds_ships():
    cycles = [_c("cycle 1", 70, 0.25), _c("cycle 2", 50, 0.195), _c("cycle 3", 40, 0.15)]
    choice = choose([BASE, TUNED, *cycles], original_ap50=0.20, max_ap_drop=0.01)
    assert choice.holds and choice.shipped.name == "cycle 2"
    assert "0.500x FLOPs" in choice.reason and choice.floor == pytest.approx(0.19)


def test_equal_flops_prefer_the_more_accurate():
    cycles = [_c("a", 50, 0.21), _c("b", 50, 0.24)]
    assert choose([BASE, *cycles], 0.20, 0.01).shipped.name == "b"


def test_no_cut_holds_ships_the_best_unpruned_model_and_says_so():
    cycles = [_c("cycle 1", 60, 0.17), _c("cycle 2", 40, 0.05)]
    choice = choose([BASE, TUNED, *cycles], original_ap50=0.20, max_ap_drop=0.01)
    assert not choice.holds and choice.shipped.name == "specialised"
    assert "no pruned model holds AP50 >= 0.1900" in choice.reason
    assert "cycle 1, scores 0.1700" in choice.reason
    # without a better person-tuned model the original is what ships
    assert choose([BASE, *cycles], 0.20, 0.01).shipped.name == "base"


def test_a_candidate_list_without_an_unpruned_model_is_refused():
    with pytest.raises(ValueError, match="no unpruned model"):
        choose([_c("cycle 1", 50, 0.3)], 0.2, 0.01)
