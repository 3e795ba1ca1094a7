"""ODPO, MMPO and RPO: hand-computed losses (saturation and R <= 0 included), gradients against their
closed forms and finite differences, and the exact reduction to DPO at each neutral setting."""

from __future__ import annotations

import math

import pytest
import torch

from rdo.core.losses import dpo_loss, mmpo_loss, odpo_loss, rpo_loss

# h = [1, -1, 0] (reference log-probs 0), beta = 0.5 -> z = beta * h = [0.5, -0.5, 0]
PC, PR = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-2.0, -1.0, -3.0])
ZERO = torch.zeros(3)
R = torch.tensor([3.0, -1.0, 0.0])  # agrees, disagrees (R < 0), no difference (R = 0)
BETA = 0.5


def softplus(x):
    return math.log1p(math.exp(x))


def sig(x):
    return 1 / (1 + math.exp(-x))


def bern_kl(p, q):
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_odpo_by_hand():
    losses, cr, rr = odpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, offset_scale=2.0)
    offset = 2 * math.log(4.0)  # 2 * log(1 + 3); R <= 0 gives no offset
    expected = [softplus(-(0.5 - offset)), softplus(0.5), math.log(2)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert expected[0] == pytest.approx(2.37066, abs=1e-5)  # 2.27259 + log(1 + e^-2.27259)
    assert cr.tolist() == pytest.approx([-0.5, -1.0, -1.5]) and rr.tolist() == pytest.approx([-1.0, -0.5, -1.5])


def test_mmpo_by_hand():
    losses, _, _ = mmpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, gamma=1.0)
    z = [0.5, -0.5, 0.0]
    p = [sig(3.0), sig(-1.0), 0.5]
    expected = [-(pi * math.log(sig(zi)) + (1 - pi) * math.log(sig(-zi))) for pi, zi in zip(p, z)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    # R < 0: the soft label trusts the scorer, so the pair the policy ranks the scorer's way costs less
    assert expected[1] == pytest.approx(0.2689414 * 0.9740770 + 0.7310586 * 0.4740770, rel=1e-6)


def test_rpo_by_hand():
    z, t = [0.5, -0.5, 0.0], [1.5, -0.5, 0.0]  # eta = 0.5: t = eta * R
    sq, _, _ = rpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, eta=0.5, variant="sq")
    assert sq.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-7)
    bwd, _, _ = rpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, eta=0.5, variant="bwd_kl")
    assert bwd.tolist() == pytest.approx([bern_kl(sig(ti), sig(zi)) for zi, ti in zip(z, t)], abs=1e-7)
    assert bwd[0].item() == pytest.approx(0.09024, abs=1e-4)  # 0.81757 * 0.27268 + 0.18243 * -0.72733
    fwd, _, _ = rpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, eta=0.5, variant="fwd_kl")
    assert fwd.tolist() == pytest.approx([bern_kl(sig(zi), sig(ti)) for zi, ti in zip(z, t)], abs=1e-7)
    assert fwd[0].item() != pytest.approx(bwd[0].item(), abs=1e-3)  # the two KL directions differ
    with pytest.raises(ValueError, match="RPO variant 'kl'"):
        rpo_loss(PC, PR, ZERO, ZERO, R, variant="kl")


def test_saturation_stays_finite_with_the_right_slope():
    """|beta * h| = 200: no inf/nan; a hopeless pair's loss grows linearly with slope beta (or the label)."""
    pc, pr = torch.tensor([400.0, -400.0]), torch.tensor([0.0, 0.0])
    r = torch.tensor([2.0, 2.0])
    for fn, kw in ((odpo_loss, {"offset_scale": 1.0}), (mmpo_loss, {"gamma": 1.0}), (rpo_loss, {"eta": 1.0, "variant": "bwd_kl"}),
                   (rpo_loss, {"eta": 1.0, "variant": "fwd_kl"})):
        pc_ = pc.clone().requires_grad_(True)
        losses, _, _ = fn(pc_, pr, torch.zeros(2), torch.zeros(2), r, beta=0.5, **kw)
        losses.sum().backward()
        assert torch.isfinite(losses).all() and torch.isfinite(pc_.grad).all(), fn.__name__
    losses, _, _ = odpo_loss(pc, pr, torch.zeros(2), torch.zeros(2), r, beta=0.5, offset_scale=1.0)
    assert losses.tolist() == pytest.approx([0.0, 200.0 + math.log(3.0)], abs=1e-5)  # softplus(-(z - log 3))
    losses, _, _ = mmpo_loss(pc, pr, torch.zeros(2), torch.zeros(2), r, beta=0.5, gamma=1.0)
    p = sig(2.0)
    assert losses.tolist() == pytest.approx([(1 - p) * 200.0, p * 200.0], rel=1e-5)


def _grads(fn, **kw):
    pc = PC.clone().double().requires_grad_(True)
    losses, _, _ = fn(pc, PR.double(), ZERO.double(), ZERO.double(), R.double(), beta=BETA, **kw)
    losses.sum().backward()
    return pc.grad


def test_gradients_match_their_closed_forms():
    """d loss / d log pi(y_w), written out: a sign error in the offset, the label or the target changes them."""
    z = torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)
    r = R.double()
    offset = 2.0 * torch.log1p(r.clamp(min=0))
    torch.testing.assert_close(_grads(odpo_loss, offset_scale=2.0), -BETA * torch.sigmoid(-(z - offset)))
    p = torch.sigmoid(1.0 * r)
    torch.testing.assert_close(_grads(mmpo_loss, gamma=1.0), BETA * (torch.sigmoid(z) - p))
    t = 0.5 * r
    torch.testing.assert_close(_grads(rpo_loss, eta=0.5, variant="sq"), 2 * BETA * (z - t))
    torch.testing.assert_close(_grads(rpo_loss, eta=0.5, variant="bwd_kl"), BETA * (torch.sigmoid(z) - torch.sigmoid(t)))
    q = torch.sigmoid(z)
    torch.testing.assert_close(_grads(rpo_loss, eta=0.5, variant="fwd_kl"), BETA * q * (1 - q) * (z - t))


@pytest.mark.parametrize("fn,kw", [(odpo_loss, {"offset_scale": 0.7}), (mmpo_loss, {"gamma": 0.8}),
                                   (rpo_loss, {"eta": 0.6, "variant": "sq"}), (rpo_loss, {"eta": 0.6, "variant": "bwd_kl"}),
                                   (rpo_loss, {"eta": 0.6, "variant": "fwd_kl"})])
def test_gradcheck_against_finite_differences(fn, kw):
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    r = torch.tensor([2.0, -0.5, 0.0, 0.3, 5.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, r, beta=0.7, **kw)[0], args)


def test_rpo_bwd_kl_is_mmpo_less_the_label_entropy():
    """Same gradients as MMPO (gamma = eta); the loss reaches 0 where beta * h = eta * R."""
    torch.testing.assert_close(_grads(rpo_loss, eta=1.3, variant="bwd_kl"), _grads(mmpo_loss, gamma=1.3))
    mm, _, _ = mmpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, gamma=1.3)
    kl, _, _ = rpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, eta=1.3, variant="bwd_kl")
    p = torch.sigmoid(1.3 * R)
    torch.testing.assert_close(mm - kl, -(p * p.log() + (1 - p) * (1 - p).log()))


def test_mmpo_with_one_label_for_all_is_cdpo():
    r = torch.full((3,), 0.4)
    p = torch.sigmoid(torch.tensor(2.0 * 0.4)).item()
    mm, _, _ = mmpo_loss(PC, PR, ZERO, ZERO, r, beta=BETA, gamma=2.0)
    cdpo, _, _ = dpo_loss(PC, PR, ZERO, ZERO, beta=BETA, label_smoothing=1 - p)
    torch.testing.assert_close(mm, cdpo)


def test_each_reduces_to_dpo_exactly_at_its_neutral_setting():
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(8, generator=g) * 3 for _ in range(4))
    r = torch.rand(8, generator=g) * 4 + 1e-3  # R > 0: the pairs the scorer agrees with
    dpo, cr, rj = dpo_loss(pc, pr, rc, rr, beta=0.3)
    for fn, kw in ((odpo_loss, {"offset_scale": 0.0}), (mmpo_loss, {"gamma": math.inf}),
                   (rpo_loss, {"eta": math.inf, "variant": "bwd_kl"})):
        losses, c, j = fn(pc, pr, rc, rr, r, beta=0.3, **kw)
        assert torch.equal(losses, dpo), fn.__name__  # bit for bit
        assert torch.equal(c, cr) and torch.equal(j, rj)
    odpo_any_r, _, _ = odpo_loss(pc, pr, rc, rr, -r, beta=0.3, offset_scale=5.0)
    assert torch.equal(odpo_any_r, dpo)  # R <= 0: no offset whatever the scale


def test_gamma_inf_gives_the_limit_labels_not_nan():
    losses, _, _ = mmpo_loss(PC, PR, ZERO, ZERO, R, beta=BETA, gamma=math.inf)
    assert losses.tolist() == pytest.approx([softplus(-0.5), softplus(-0.5), math.log(2)], rel=1e-6)  # p = 1, 0, 1/2


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"reward_diffs must have shape \(B,\)"):
        odpo_loss(PC, PR, ZERO, ZERO, R.unsqueeze(1))
    with pytest.raises(ValueError, match="reward_diffs has shape"):
        mmpo_loss(PC, PR, ZERO, ZERO, R[:2])
