"""The checks of notebook 07: the STE check's quantizer and graph walk.

The typical wrong answers and right variants of every exercise are in
``tests/wrong_answers.py`` and run by ``test_exercise_contract.py``.
"""

from __future__ import annotations

import torch

from linquant_helpers import fake_quantize_ste
from linquant_helpers.exercises import lesson07 as ex


def test_the_ste_quantizer_rounds_with_zero_gradient() -> None:
    fq = ex._Quantizer(0.25, 3)
    w = torch.tensor([0.1, 0.13, -0.4, 2.0], requires_grad=True)
    out = fq(w)
    assert out.tolist() == [0.0, 0.25, -0.5, 0.75]  # 0.52 -> 1 (half-even 0.5 -> 0 aside)
    (grad,) = torch.autograd.grad(out.sum(), w)
    assert grad.abs().sum() == 0


def test_graph_walk_tells_a_missing_detach_from_fq_alone() -> None:
    fq = ex._Quantizer(0.25, 3)
    w = torch.nn.Parameter(torch.tensor([0.1, 0.6]))
    assert ex._reaches_without(w + (fq(w) - w), w, fq.nodes)
    assert not ex._reaches_without(fq(w), w, fq.nodes)
    assert ex._reaches_without(w + (fq(w) - w).detach(), w, fq.nodes)


def test_the_package_ste_passes_the_check() -> None:
    # the package's fake_quantize_ste is the same estimator, around its own quantizer
    def straight_through(w, fq):
        return (
            fake_quantize_ste(w, 4)
            - fake_quantize_ste(w, 4).detach()
            + fq(w).detach()
        )

    assert ex.check_straight_through(straight_through).status == "PASS"


def test_a_clipped_ste_is_told_the_exercise_asks_for_the_identity() -> None:
    # the check's matrix reaches past fq's range, so a gradient masked where fq
    # saturates differs from the identity there, and only there
    def clipped(w, fq):
        limit = fq(torch.full_like(w, float("inf"))).detach()
        inside = w.clamp(-limit, limit)
        return inside + (fq(w) - inside).detach()

    for seed in (0, 1, 2):
        result = ex.check_straight_through(clipped, seed)
        assert result.status == "FAIL"
        assert "clipped straight-through" in result.message
        assert "where fq saturates (|w| > 3 s)" in result.message
        count = int(result.message.split("on the ")[1].split(" elements")[0])
        assert 0 < count < 60  # some, not all, of the 6 x 10 matrix
