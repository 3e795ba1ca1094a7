"""Loss math: hand-computed golden values, shape guards, gradients, and cross-checks against TRL 1.16.

Shared golden inputs (one pair, beta = 0.1):
    log pi(y_w) = -10, log pi(y_l) = -12, log pi_ref(y_w) = -11, log pi_ref(y_l) = -11.5
    chosen log-ratio = -10 - (-11) = 1.0, rejected log-ratio = -12 - (-11.5) = -0.5, h = 1.5
Throughout, -log sigmoid(x) = log(1 + exp(-x)).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rdo.core.losses import bt_loss, difference_loss, dpo_loss, ipo_loss, kto_loss, rrhf_loss, simpo_loss

ATOL = 1e-6


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def golden_pair():
    # policy_chosen, policy_rejected, reference_chosen, reference_rejected
    return t(-10.0), t(-12.0), t(-11.0), t(-11.5)


# ---------------------------------------------------------------------------------------------
# Golden values
# ---------------------------------------------------------------------------------------------


def test_dpo_golden():
    # beta * h = 0.1 * 1.5 = 0.15; loss = log(1 + e^-0.15) = 0.620957
    losses, chosen_rewards, rejected_rewards = dpo_loss(*golden_pair(), beta=0.1)
    assert losses.item() == pytest.approx(0.620957, abs=ATOL)
    # rewards = beta * log-ratio: 0.1 * 1.0 and 0.1 * -0.5
    assert chosen_rewards.item() == pytest.approx(0.1, abs=ATOL)
    assert rejected_rewards.item() == pytest.approx(-0.05, abs=ATOL)


def test_cdpo_golden():
    # eps = 0.1: 0.9 * log(1 + e^-0.15) + 0.1 * log(1 + e^0.15)
    #          = 0.9 * 0.620957 + 0.1 * 0.770957 = 0.558861 + 0.077096 = 0.635957
    losses, _, _ = dpo_loss(*golden_pair(), beta=0.1, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.635957, abs=ATOL)


def test_weighted_dpo_golden():
    # RDO weight R^alpha = 2^1 = 2, applied by the caller: 2 * 0.620957 = 1.241914
    losses, _, _ = dpo_loss(*golden_pair(), beta=0.1)
    weights = t(2.0) ** 1.0
    assert (weights * losses).sum().item() == pytest.approx(1.241914, abs=ATOL)


def test_bt_golden():
    # r_w - r_l = 1.2 - 0.4 = 0.8: log(1 + e^-0.8) = 0.371101
    assert bt_loss(t(1.2), t(0.4)).item() == pytest.approx(0.371101, abs=ATOL)
    # with margin 0.5: 0.8 - 0.5 = 0.3: log(1 + e^-0.3) = 0.554355
    assert bt_loss(t(1.2), t(0.4), margin=t(0.5)).item() == pytest.approx(0.554355, abs=ATOL)


def test_difference_loss_golden():
    # bce = BCE(1.3, label 1) = log(1 + e^-1.3) = 0.241008
    # dup = 0.2^2 = 0.04;  rev = (1.3 + -0.9)^2 = 0.4^2 = 0.16
    # loss = 0.241008 + 1 * 0.04 + 1 * 0.16 = 0.441008
    losses, bce, dup, rev = difference_loss(t(1.3), t(-0.9), t(0.2), t(1.0), beta0=1.0, beta1=1.0)
    assert bce.item() == pytest.approx(0.241008, abs=ATOL)
    assert dup.item() == pytest.approx(0.04, abs=ATOL)
    assert rev.item() == pytest.approx(0.16, abs=ATOL)
    assert losses.item() == pytest.approx(0.441008, abs=ATOL)
    # label 0 (y2 preferred): BCE(1.3, 0) = log(1 + e^1.3) = 1.3 + 0.241008 = 1.541008
    _, bce0, _, _ = difference_loss(t(1.3), t(-0.9), t(0.2), t(0.0), beta0=1.0, beta1=1.0)
    assert bce0.item() == pytest.approx(1.541008, abs=ATOL)


def test_difference_loss_rejects_paper_minus_one_labels():
    with pytest.raises(ValueError, match="label 0"):
        difference_loss(t(1.3), t(-0.9), t(0.2), t(-1.0), beta0=1.0, beta1=1.0)


def test_rrhf_golden():
    # p = seq_logps / length: [-4/2, -3/2, -1/1] = [-2, -1.5, -1]; rewards [1, 3, 2].
    # Pairs (i worse, j better): (0,1): max(0, -2 + 1.5) = 0; (0,2): max(0, -2 + 1) = 0;
    # (2,1): max(0, -1 + 1.5) = 0.5.  Sum = 0.5.  A 4th padded response (mask False) with the
    # highest reward and score must be ignored.
    seq_logps = t(-4.0, -3.0, -1.0, 0.0).unsqueeze(0)  # (1, 4)
    lengths = torch.tensor([[2, 2, 1, 0]])
    rewards = t(1.0, 3.0, 2.0, 10.0).unsqueeze(0)
    mask = torch.tensor([[True, True, True, False]])
    pair_losses, best_index, p = rrhf_loss(seq_logps, lengths, rewards, mask)
    assert pair_losses.shape == (1, 4, 4)
    assert pair_losses.sum().item() == pytest.approx(0.5, abs=ATOL)
    assert pair_losses[0, 2, 1].item() == pytest.approx(0.5, abs=ATOL)
    assert best_index.tolist() == [1]
    assert p[0, :3].tolist() == pytest.approx([-2.0, -1.5, -1.0])


def test_rrhf_length_penalty_zero_uses_summed_logps():
    # length_penalty = 0: p = seq_logps = [-4, -3, -1]; only (2,1) is violated: -1 - (-3) = 2
    pair_losses, _, _ = rrhf_loss(
        t(-4.0, -3.0, -1.0).unsqueeze(0), torch.tensor([[2, 2, 1]]), t(1.0, 3.0, 2.0).unsqueeze(0),
        torch.ones(1, 3, dtype=torch.bool), length_penalty=0.0,
    )
    assert pair_losses.sum().item() == pytest.approx(2.0, abs=ATOL)


def test_ipo_golden():
    # |y_w| = 5, |y_l| = 10, beta = 0.1, 1 / (2 beta) = 5
    # averaged: h = 1.0 / 5 - (-0.5) / 10 = 0.2 + 0.05 = 0.25; loss = (0.25 - 5)^2 = 22.5625
    # summed:   h = 1.5;                                       loss = (1.5 - 5)^2 = 12.25
    args = (*golden_pair(), torch.tensor([5]), torch.tensor([10]))
    averaged, chosen_rewards, _ = ipo_loss(*args, beta=0.1)
    summed, _, _ = ipo_loss(*args, beta=0.1, average_log_ratios=False)
    assert averaged.item() == pytest.approx(22.5625, abs=ATOL)
    assert summed.item() == pytest.approx(12.25, abs=ATOL)
    assert chosen_rewards.item() == pytest.approx(0.1, abs=ATOL)


def test_simpo_golden():
    # a_w = -1.0, a_l = -1.5, beta = 2, gamma = 0.5: z = 2 * 0.5 - 0.5 = 0.5
    # loss = log(1 + e^-0.5) = 0.474077; rewards = 2 * a = -2, -3
    losses, chosen_rewards, rejected_rewards = simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(0.474077, abs=ATOL)
    assert (chosen_rewards.item(), rejected_rewards.item()) == pytest.approx((-2.0, -3.0))
    # eps = 0.1: 0.9 * log(1 + e^-0.5) + 0.1 * log(1 + e^0.5) = 0.426669 + 0.097408 = 0.524077
    smoothed, _, _ = simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.524077, abs=ATOL)


def test_kto_golden():
    # Two pointwise completions: log-ratios 1.0 (desirable) and -0.5 (undesirable); z = 0.2, beta = 0.1
    # desirable:   1 - sigmoid(0.1 * (1.0 - 0.2))  = 1 - sigmoid(0.08) = 1 - 0.519989 = 0.480011
    # undesirable: 1 - sigmoid(0.1 * (0.2 + 0.5))  = 1 - sigmoid(0.07) = 1 - 0.517493 = 0.482507
    policy, reference = t(-10.0, -12.0), t(-11.0, -11.5)
    desirable = torch.tensor([True, False])
    losses, rewards = kto_loss(policy, reference, torch.tensor(0.2), desirable, beta=0.1)
    assert losses.tolist() == pytest.approx([0.480011, 0.482507], abs=ATOL)
    assert rewards.tolist() == pytest.approx([0.1, -0.05])
    # lambda_D = 1.3, lambda_U = 0.7: 1.3 * 0.480011 = 0.624014, 0.7 * 0.482507 = 0.337755
    weighted, _ = kto_loss(policy, reference, 0.2, desirable, desirable_weight=1.3, undesirable_weight=0.7)
    assert weighted.tolist() == pytest.approx([0.624014, 0.337755], abs=ATOL)
    # z = -0.3 is clamped to 0: 1 - sigmoid(0.1) = 0.475021; 1 - sigmoid(0.05) = 0.487503
    clamped, _ = kto_loss(policy, reference, torch.tensor(-0.3), desirable, beta=0.1)
    assert clamped.tolist() == pytest.approx([0.475021, 0.487503], abs=ATOL)


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

B = 4


def _pairwise_calls(make):
    """(name, thunk) for every 1-D loss, building each input with `make(i)`."""
    return [
        ("dpo", lambda: dpo_loss(make(0), make(1), make(2), make(3))),
        ("ipo", lambda: ipo_loss(make(0), make(1), make(2), make(3), make(4).abs() + 1, make(5).abs() + 1)),
        ("simpo", lambda: simpo_loss(make(0), make(1))),
        ("bt", lambda: (bt_loss(make(0), make(1), margin=make(2)),)),
        ("difference", lambda: difference_loss(make(0), make(1), make(2), (make(3) > 0).double(), 1.0, 1.0)),
        ("kto", lambda: kto_loss(make(0), make(1), torch.tensor(0.1), make(2) > 0)),
    ]


@pytest.mark.parametrize("name,call", _pairwise_calls(lambda i: torch.randn(B, dtype=torch.float64)))
def test_outputs_are_per_example(name, call):
    for out in call():
        assert out.shape == (B,), name


@pytest.mark.parametrize("bad_index", range(2))
@pytest.mark.parametrize("name", ["dpo", "ipo", "simpo", "bt", "difference", "kto"])
def test_column_vector_input_raises(name, bad_index):
    # A (B, 1) tensor among (B,) ones would broadcast to (B, B); it must be refused instead.
    def make(i):
        x = torch.randn(B, dtype=torch.float64)
        return x.unsqueeze(1) if i == bad_index else x

    call = dict(_pairwise_calls(make))[name]
    with pytest.raises(ValueError, match=r"\(B,\)"):
        call()


def test_mismatched_batch_raises():
    with pytest.raises(ValueError, match="policy_rejected_logps has shape"):
        dpo_loss(torch.zeros(4), torch.zeros(3), torch.zeros(4), torch.zeros(4))


def test_rrhf_shape_checks():
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        rrhf_loss(torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one valid response"):
        rrhf_loss(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_kto_rejects_vector_kl():
    with pytest.raises(ValueError, match="kl must be a scalar"):
        kto_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_gradients_finite(scale):
    # scale = 1e4 pushes every sigmoid deep into saturation; logsigmoid must stay finite.
    gen = torch.Generator().manual_seed(0)
    logps = (scale * torch.randn(6, B, generator=gen, dtype=torch.float64)).requires_grad_()
    for name, call in _pairwise_calls(lambda i: logps[i]):
        outputs = call()
        (grad,) = torch.autograd.grad(outputs[0].sum(), logps)
        assert torch.isfinite(grad).all(), name
        for reward in outputs[1:]:
            assert not reward.requires_grad, f"{name}: rewards/terms must be detached"


def test_rrhf_gradient_ignores_padding():
    # Padding responses may carry garbage (-inf) scores; they must not poison the gradient.
    seq_logps = torch.tensor([[-4.0, -3.0, -1.0, float("-inf")]], requires_grad=True)
    mask = torch.tensor([[True, True, True, False]])
    pair_losses, _, _ = rrhf_loss(seq_logps, torch.tensor([[2, 2, 1, 0]]), torch.tensor([[1.0, 3.0, 2.0, 9.0]]), mask)
    (grad,) = torch.autograd.grad(pair_losses.sum(), seq_logps)
    # d/dp: only pair (2,1) is active: +1 on p_2 (length 1), -1 on p_1 (length 2) -> -0.5 on seq_logps_1
    assert grad.tolist() == [[0.0, -0.5, 1.0, 0.0]]


# ---------------------------------------------------------------------------------------------
# Cross-checks against TRL 1.16's own trainer code
# ---------------------------------------------------------------------------------------------
# TRL 1.16 has no standalone DPO/KTO loss function: the loss is inline in `_compute_loss`, which runs
# the model and logs metrics. We call that real method on a trainer made with `object.__new__`
# (no __init__, no dataset, no model load), with the attributes it reads set by hand, and a fake
# model whose `.log_probs` are per-token log-probs we choose, zero outside the completion (TRL sums
# them unmasked, relying on the fused LM head to zero the -100 label positions). `.eval()` mode
# keeps the train-only token counters out of the way.


@pytest.fixture(scope="module")
def trl():
    trl = pytest.importorskip("trl")
    if not trl.__version__.startswith("1.16."):
        pytest.skip(f"cross-checks read TRL 1.16 internals; found trl {trl.__version__}")
    with warnings.catch_warnings():  # "you are importing from trl.experimental"
        warnings.simplefilter("ignore")
        from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.kto_trainer import KTOTrainer

    return SimpleNamespace(DPOTrainer=DPOTrainer, KTOTrainer=KTOTrainer, CPOTrainer=CPOTrainer)


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics


class _FakeModel:
    """Returns the per-token log-probs registered for an `input_ids` tensor."""

    training = False

    def __init__(self, rows):
        self.rows = rows  # list of (input_ids, per_token_logps)

    def __call__(self, input_ids, **kwargs):
        for ids, per_token_logps in self.rows:
            if torch.equal(ids, input_ids):
                zeros = torch.zeros_like(per_token_logps)
                return SimpleNamespace(
                    log_probs=per_token_logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
                )
        raise AssertionError("fake model called with unregistered input_ids")


def _sequences(gen, n, prompt_len=3, max_completion=6):
    """Random token rows with a prompt, a completion of random length, then padding."""
    width = prompt_len + max_completion
    lengths = torch.randint(1, max_completion + 1, (n,), generator=gen)
    positions = torch.arange(width)
    attention_mask = (positions < prompt_len + lengths.unsqueeze(1)).long()  # (n, T)
    completion_mask = attention_mask * (positions >= prompt_len).long()  # (n, T)
    input_ids = torch.randint(4, 260, (n, width), generator=gen)
    # per-token log-probs of the shifted labels, zero where the label is -100
    per_token = -3 * torch.rand(n, width - 1, generator=gen, dtype=torch.float64) * completion_mask[:, 1:]
    return input_ids, attention_mask, completion_mask, per_token.requires_grad_()


def _bare(cls, model, **attrs):
    trainer = object.__new__(cls)
    trainer.model = model
    trainer.accelerator = _Accelerator()
    trainer.aux_loss_enabled = False
    trainer.precompute_ref_logps = True
    trainer._metrics = defaultdict(lambda: defaultdict(list))
    trainer._total_train_tokens = 0
    for key, value in attrs.items():
        setattr(trainer, key, value)
    return trainer


def _trl_dpo_vs_ours(trl, gen, n_pairs, loss_type, label_smoothing, ours):
    """Run TRL's DPO `_compute_loss` and `ours(policy_logps..., lengths)` on one random batch."""
    input_ids, attention_mask, completion_mask, per_token = _sequences(gen, 2 * n_pairs)  # [chosen; rejected]
    ref_chosen, ref_rejected = -3 * torch.rand(2, n_pairs, generator=gen, dtype=torch.float64) * 4
    trainer = _bare(
        trl.DPOTrainer, _FakeModel([(input_ids, per_token)]), beta=0.1, loss_types=[loss_type], loss_weights=[1.0],
        label_smoothing=label_smoothing, f_divergence_type="reverse_kl", ld_alpha=None, use_weighting=False,
    )
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
                  ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)
    trl_loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    (trl_grad,) = torch.autograd.grad(trl_loss, per_token)

    chosen, rejected = per_token.sum(dim=1).chunk(2)  # (B,) each
    chosen_len, rejected_len = completion_mask.sum(dim=1).chunk(2)
    our_losses = ours(chosen, rejected, ref_chosen, ref_rejected, chosen_len, rejected_len)
    assert our_losses.shape == (n_pairs,)
    (our_grad,) = torch.autograd.grad(our_losses.mean(), per_token)
    return trl_loss, our_losses.mean(), trl_grad, our_grad


def _assert_close(trl_loss, our_loss, trl_grad, our_grad):
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-10, atol=1e-10)


def test_dpo_matches_trl(trl):
    gen = torch.Generator().manual_seed(1)
    _assert_close(*_trl_dpo_vs_ours(
        trl, gen, 8, "sigmoid", 0.0, lambda pc, pr, rc, rr, lc, lr: dpo_loss(pc, pr, rc, rr, beta=0.1)[0]
    ))


def test_ipo_matches_trl(trl):
    # TRL 1.16 divides each log-ratio by its completion length; our average_log_ratios=True.
    gen = torch.Generator().manual_seed(2)
    _assert_close(*_trl_dpo_vs_ours(
        trl, gen, 8, "ipo", 0.0, lambda pc, pr, rc, rr, lc, lr: ipo_loss(pc, pr, rc, rr, lc, lr, beta=0.1)[0]
    ))


def test_cdpo_matches_trl(trl):
    # TRL 1.16's "sigmoid" ignores label_smoothing, and "robust" is a different loss. Its "aot" loss
    # applies exactly the cDPO formula to h after sorting the batch's log-ratios; with one pair per
    # batch the sort is the identity, so "aot" with B = 1 is TRL's cDPO. Checked pair by pair.
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        _assert_close(*_trl_dpo_vs_ours(
            trl, gen, 1, "aot", 0.1,
            lambda pc, pr, rc, rr, lc, lr: dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)[0],
        ))


@pytest.mark.parametrize("kl_offset", [0.7, -0.7], ids=["kl_positive", "kl_clamped_to_zero"])
def test_kto_matches_trl(trl, kl_offset):
    gen = torch.Generator().manual_seed(4)
    n = 8
    input_ids, attention_mask, completion_mask, per_token = _sequences(gen, n)
    kl_ids, kl_attention_mask, kl_completion_mask, kl_per_token = _sequences(gen, n)
    label = torch.tensor([True, False, True, True, False, False, True, False])
    ref_logps = per_token.detach().sum(dim=1) + torch.randn(n, generator=gen, dtype=torch.float64)
    kl_logps = kl_per_token.detach().sum(dim=1)
    ref_kl_logps = kl_logps - kl_offset + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    trainer = _bare(
        trl.KTOTrainer, _FakeModel([(input_ids, per_token), (kl_ids, kl_per_token)]), beta=0.1,
        loss_type="kto", calculate_KL=True, desirable_weight=1.3, undesirable_weight=0.7,
    )
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask, label=label,
                  KL_input_ids=kl_ids, KL_attention_mask=kl_attention_mask, KL_completion_mask=kl_completion_mask,
                  ref_logps=ref_logps, ref_KL_logps=ref_kl_logps)
    trl_loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    (trl_grad,) = torch.autograd.grad(trl_loss, per_token)

    kl = (kl_logps - ref_kl_logps).mean()  # the raw estimate; kto_loss clamps it at 0
    our_losses, _ = kto_loss(per_token.sum(dim=1), ref_logps, kl, label, beta=0.1,
                             desirable_weight=1.3, undesirable_weight=0.7)
    (our_grad,) = torch.autograd.grad(our_losses.mean(), per_token)
    _assert_close(trl_loss, our_losses.mean(), trl_grad, our_grad)
    assert trainer._metrics["eval"]["kl"][-1] == pytest.approx(max(kl.item(), 0.0))


def test_simpo_matches_trl_cpo(trl):
    # TRL keeps SimPO in its CPO trainer; `cpo_loss` is a standalone method on averaged log-probs.
    gen = torch.Generator().manual_seed(5)
    chosen, rejected = -3 * torch.rand(2, 8, generator=gen, dtype=torch.float64)
    trainer = _bare(trl.CPOTrainer, None, loss_type="simpo", alpha=0.0, beta=2.0, simpo_gamma=0.5,
                    label_smoothing=0.1)
    trl_losses, trl_chosen_rewards, trl_rejected_rewards = trainer.cpo_loss(chosen, rejected)
    losses, chosen_rewards, rejected_rewards = simpo_loss(chosen, rejected, beta=2.0, gamma=0.5, label_smoothing=0.1)
    torch.testing.assert_close(losses, trl_losses)
    torch.testing.assert_close(chosen_rewards, trl_chosen_rewards)
    torch.testing.assert_close(rejected_rewards, trl_rejected_rewards)
