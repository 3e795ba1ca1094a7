"""Alignment and reward-model losses as pure functions of log-probs and scores.

Every function returns one loss *per example* (never reduced) plus detached rewards for logging.
The trainer multiplies by the reward-difference weights R^alpha (Eq. 2) and reduces in one place;
no loss here knows about weights. Inputs are `(B,)` tensors (RRHF: `(B, K)`), and shapes are
checked so a `(B, 1)` tensor cannot silently broadcast against a `(B,)` one into `(B, B)`.

Equation numbers refer to the RDO paper (Wang et al., "Reward Difference Optimization for Sample
Reweighting in Offline RLHF"); the DPO/IPO/SimPO/KTO papers are cited where their own equations apply.

The reward-aware losses (ODPO, MMPO, RPO) read the same per-pair reward difference R the weights come
from, but inside the loss: as an offset, a soft label or a target gap. They still know nothing of the
weight R^alpha, which the trainer applies on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_same_shape(ndim: int, **tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor has `ndim` dims and all share one shape."""
    first_name, first_shape = None, None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != ndim:
            want = "(B,)" if ndim == 1 else "(B, K)"
            raise ValueError(
                f"{name} must have shape {want}, got {tuple(t.shape)}; "
                "squeeze trailing size-1 dims so (B, 1) - (B,) cannot broadcast to (B, B)"
            )
        if first_shape is None:
            first_name, first_shape = name, t.shape
        elif t.shape != first_shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but {first_name} has {tuple(first_shape)}")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO, i.e. -g in DPO+rc (Sec. 2, Rafailov et al. 2023 Eq. 7), optionally conservative (cDPO).

    All inputs are `(B,)` log-probs summed over response tokens.

        h      = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))
        losses = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    `eps = label_smoothing` is the probability that a label is flipped (cDPO); eps = 0 is plain DPO.
    This is *not* TRL's "robust" loss, which subtracts the flipped term and divides by (1 - 2 eps).

    Returns `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`; rewards are
    `beta * (policy - reference)`, detached.
    """
    h, chosen_logratios, rejected_logratios = _pair_logits(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)  # (B,) each
    logits = beta * h  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)  # (B,)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float = 0.1,
    average_log_ratios: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO (Azar et al. 2023, Eq. 17), with `beta` playing the role of tau.

    Log-probs are `(B,)` sums over response tokens; `*_lengths` are `(B,)` response token counts.

        h      = (log pi(y_w) - log pi_ref(y_w)) / |y_w| - (log pi(y_l) - log pi_ref(y_l)) / |y_l|
        losses = (h - 1 / (2 beta)) ** 2

    Lengths are clamped to at least 1. With `average_log_ratios=False` the divisions are dropped
    (summed log-ratios). The averaged form is what TRL 1.16 computes for `loss_type="ipo"`.

    Returns `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`; rewards are
    `beta * (policy - reference)` on summed log-probs, detached (as TRL logs them).
    """
    h, chosen_logratios, rejected_logratios = _pair_logits(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
        chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths)  # (B,) each
    if average_log_ratios:
        chosen_logratios_avg = chosen_logratios / chosen_lengths.to(chosen_logratios.dtype).clamp(min=1)  # (B,)
        rejected_logratios_avg = rejected_logratios / rejected_lengths.to(rejected_logratios.dtype).clamp(min=1)
        h = chosen_logratios_avg - rejected_logratios_avg  # (B,)
    losses = (h - 1 / (2 * beta)) ** 2  # (B,)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def _pair_logits(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, **more):
    """Check shapes; return (h (B,), chosen log-ratios (B,), rejected log-ratios (B,)) as in dpo_loss."""
    _check_same_shape(
        1,
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        reference_chosen_logps=reference_chosen_logps,
        reference_rejected_logps=reference_rejected_logps,
        **more,
    )
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    return chosen_logratios - rejected_logratios, chosen_logratios, rejected_logratios


def odpo_offset(reward_diffs: torch.Tensor, offset_scale: float) -> torch.Tensor:
    """ODPO's offset Delta(R) = offset_scale * log(1 + max(R, 0)), `(B,)`.

    The ODPO paper (Amini et al. 2024, arXiv 2402.10571, Sec. 3) uses Delta = alpha * log(r_w - r_l) on
    rewards where the chosen one always wins. rdo's R can be <= 0 (the scorer disagrees with the label)
    or below 1, where log R is negative or undefined, so the offset uses log(1 + R) on R clipped at 0:
    it is 0 for a doubted pair (which then trains as plain DPO), never negative, and grows like log R
    for large R. `offset_scale` plays the paper's alpha (named apart from rdo's exponent alpha).
    """
    return offset_scale * torch.log1p(reward_diffs.clamp(min=0))  # (B,)


def odpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    reward_diffs: torch.Tensor,
    beta: float = 0.1,
    offset_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO with an offset (ODPO; Amini et al., Findings ACL 2024, arXiv 2402.10571, Eq. 7).

    Log-probs and `reward_diffs` R are `(B,)`; h is the DPO log-ratio difference (see `dpo_loss`).

        Delta  = offset_scale * log(1 + max(R, 0))          (odpo_offset: the choice is explained there)
        losses = -log sigmoid(beta * h - Delta)

    The implicit reward gap must exceed an offset that grows with R. offset_scale = 0 is DPO exactly.
    Returns `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`, rewards as in `dpo_loss`.
    """
    h, chosen, rejected = _pair_logits(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                       reference_rejected_logps, reward_diffs=reward_diffs)
    losses = -F.logsigmoid(beta * h - odpo_offset(reward_diffs, offset_scale))  # (B,)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def soft_label_logits(reward_diffs: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * R, `(B,)`: the logit of the Bradley-Terry soft label sigmoid(scale * R).

    `scale = inf` is the limit: +inf for R > 0 (label 1), -inf for R < 0 (label 0), and 0 for R = 0
    (label 1/2, as for every scale), so inf * 0 never makes a NaN.
    """
    return torch.where(reward_diffs == 0, torch.zeros_like(reward_diffs), scale * reward_diffs)  # (B,)


def _bernoulli_cross_entropy(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """-[p log q + (1 - p) log(1 - q)] with p = sigmoid(target_logits), q = sigmoid(logits), `(B,)`.

    Written with xlogy-style zeros so p = 1 (target logit +inf) gives exactly -log q, not 0 * -inf.
    """
    p, not_p = torch.sigmoid(target_logits), torch.sigmoid(-target_logits)  # (B,); not_p is exact near p = 1
    return -(torch.where(p > 0, p * F.logsigmoid(logits), 0.0) + torch.where(not_p > 0, not_p * F.logsigmoid(-logits), 0.0))


def _bernoulli_entropy(target_logits: torch.Tensor) -> torch.Tensor:
    """H(p) for p = sigmoid(target_logits), `(B,)`; 0 at p in {0, 1}."""
    p, not_p = torch.sigmoid(target_logits), torch.sigmoid(-target_logits)
    return -(torch.xlogy(p, p) + torch.xlogy(not_p, not_p))


def mmpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    reward_diffs: torch.Tensor,
    beta: float = 0.1,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Margin matching preference optimisation (MMPO; Kim et al., Findings EMNLP 2024, arXiv 2410.03145, Sec. 3).

    Log-probs and `reward_diffs` R are `(B,)`; h as in `dpo_loss`.

        p      = sigmoid(gamma * R)                                   soft Bradley-Terry label
        losses = -[p * log sigmoid(beta * h) + (1 - p) * log sigmoid(-beta * h)]

    A pair's label says how surely chosen beats rejected; R <= 0 gives p <= 1/2 (the scorer's doubt
    is trusted). gamma = inf gives p = 1 for every R > 0: DPO exactly on pairs the scorer agrees with.
    A constant p = 1 - eps is cDPO with label_smoothing eps.
    Returns `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`, rewards as in `dpo_loss`.
    """
    h, chosen, rejected = _pair_logits(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                       reference_rejected_logps, reward_diffs=reward_diffs)
    losses = _bernoulli_cross_entropy(soft_label_logits(reward_diffs, gamma), beta * h)  # (B,)
    return losses, beta * chosen.detach(), beta * rejected.detach()


RPO_VARIANTS = ("sq", "bwd_kl", "fwd_kl")


def rpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    reward_diffs: torch.Tensor,
    beta: float = 0.1,
    eta: float = 1.0,
    variant: str = "bwd_kl",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reward-aware preference optimisation / reward distillation (RPO; Sun et al. 2025, arXiv 2502.00203,
    Sec. 3; Fisch et al., TMLR 2025): fit the implicit reward gap beta * h to the explicit one eta * R.

    Log-probs and `reward_diffs` R are `(B,)`; h as in `dpo_loss`. With z = beta * h, t = eta * R:

        sq:      losses = (z - t) ** 2
        bwd_kl:  losses = KL(Bern(sigmoid(t)) || Bern(sigmoid(z)))
                        = -[p log sigmoid(z) + (1 - p) log sigmoid(-z)] - H(p),   p = sigmoid(t)
        fwd_kl:  losses = KL(Bern(sigmoid(z)) || Bern(sigmoid(t)))

    The variant names follow NeMo-Aligner's `rpo_sq`, `rpo_bwd_kl`, `rpo_fwd_kl` (bwd: the target's
    distribution comes first). bwd_kl differs from `mmpo_loss` with gamma = eta only by H(p), which does
    not depend on the policy: the same gradients, a loss that reaches 0 at the target. With eta = inf
    and R > 0, p = 1 and bwd_kl is DPO exactly; sq and fwd_kl need a finite target and have no DPO limit.
    Returns `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`, rewards as in `dpo_loss`.
    """
    if variant not in RPO_VARIANTS:
        raise ValueError(f"RPO variant {variant!r}: choose one of {RPO_VARIANTS}")
    h, chosen, rejected = _pair_logits(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                       reference_rejected_logps, reward_diffs=reward_diffs)
    z = beta * h  # (B,) implicit reward gap
    t = soft_label_logits(reward_diffs, eta)  # (B,) explicit reward gap eta * R
    if variant == "sq":
        losses = (z - t) ** 2  # (B,)
    elif variant == "bwd_kl":
        losses = _bernoulli_cross_entropy(t, z) - _bernoulli_entropy(t)  # (B,)
    else:
        q = torch.sigmoid(z)  # (B,) the policy's preference probability
        losses = q * (F.logsigmoid(z) - F.logsigmoid(t)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - F.logsigmoid(-t))  # (B,)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def simpo_loss(
    policy_chosen_avg_logps: torch.Tensor,
    policy_rejected_avg_logps: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al. 2024, Eq. 6): reference-free, length-normalised, with a target margin.

    Inputs are `(B,)` log-probs *averaged* over response tokens (a_w, a_l).

        z      = beta * (a_w - a_l) - gamma
        losses = -(1 - eps) * log sigmoid(z) - eps * log sigmoid(-z)

    `gamma` is the margin in reward units (after scaling by beta), as in the SimPO paper. TRL's CPO
    trainer stores the same margin as `simpo_gamma` and subtracts `simpo_gamma / beta` *before*
    multiplying by beta, which is the same number. `eps = label_smoothing` as in TRL's CPO trainer.

    Returns `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`; rewards are `beta * a`, detached.
    """
    _check_same_shape(
        1, policy_chosen_avg_logps=policy_chosen_avg_logps, policy_rejected_avg_logps=policy_rejected_avg_logps
    )
    z = beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)  # (B,)
    return losses, beta * policy_chosen_avg_logps.detach(), beta * policy_rejected_avg_logps.detach()


def bt_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bradley-Terry reward-model loss (Eq. 3), per pair.

        losses = -log sigmoid(r_w - r_l - margin)

    `chosen_rewards`, `rejected_rewards` and the optional `margin` (Llama-2 style) are `(B,)`.
    Returns `losses`, `(B,)`.
    """
    if margin is None:
        _check_same_shape(1, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
        logits = chosen_rewards - rejected_rewards  # (B,)
    else:
        _check_same_shape(1, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards, margin=margin)
        logits = chosen_rewards - rejected_rewards - margin  # (B,)
    return -F.logsigmoid(logits)  # (B,)  Eq. (3)


def difference_loss(
    f_12: torch.Tensor,
    f_21: torch.Tensor,
    f_dup: torch.Tensor,
    labels: torch.Tensor,
    beta0: float,
    beta1: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reward-difference-model loss (Eqs. 4-6), per comparison.

    `f_12 = f(x, y1, y2)`, `f_21 = f(x, y2, y1)` and `f_dup = f(x, y_i, y_i)` (one response of the
    pair, picked at random by the caller) are `(B,)` scalar outputs of the difference model.
    `labels` is `(B,)` float, 1 when y1 is preferred and 0 otherwise. (The paper writes the
    indicator as +1/-1; -1 corresponds to target 0 here, and is rejected with an error.)

        bce    = BCE_with_logits(f_12, labels)     # Eq. (4)
        dup    = f_dup ** 2                        # Eq. (5), duplication
        rev    = (f_12 + f_21) ** 2                # Eq. (5), reverse
        losses = bce + beta0 * dup + beta1 * rev   # Eq. (6)

    Returns `(losses, bce, dup, rev)`, each `(B,)`; the three terms are detached, for logging.
    """
    _check_same_shape(1, f_12=f_12, f_21=f_21, f_dup=f_dup, labels=labels)
    labels = labels.to(f_12.dtype)
    if ((labels < 0) | (labels > 1)).any():
        raise ValueError("labels must lie in [0, 1] (1 when y1 is preferred); the paper's -1 means label 0 here")
    bce = F.binary_cross_entropy_with_logits(f_12, labels, reduction="none")  # (B,)  Eq. (4)
    dup = f_dup**2  # (B,)  Eq. (5)
    rev = (f_12 + f_21) ** 2  # (B,)  Eq. (5)
    losses = bce + beta0 * dup + beta1 * rev  # (B,)  Eq. (6)
    return losses, bce.detach(), dup.detach(), rev.detach()


def rrhf_loss(
    seq_logps: torch.Tensor,
    lengths: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    length_penalty: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RRHF ranking term (Yuan et al. 2023; RRHF+rc in Sec. 2), one entry per ordered pair.

    Each prompt has up to K responses: `seq_logps` `(B, K)` summed log-probs, `lengths` `(B, K)`
    response token counts, `rewards` `(B, K)`, `mask` `(B, K)` bool (False = padding response).

        p_i              = seq_logps_i / max(lengths_i, 1) ** length_penalty
        pair_losses[b,i,j] = max(0, p_i - p_j)  if r_i < r_j and i, j both valid, else 0

    so i is the worse response and j the better. A pair's RDO weight is R^alpha with
    R = r_j - r_i, applied by the caller as `(weights * pair_losses).sum((1, 2))`.

    The SFT term of RRHF (cross-entropy on the best response, `best_index`) is not computed here:
    the caller takes the mean token NLL of response `best_index[b]` from its per-token log-probs.

    Returns `(pair_losses (B, K, K), best_index (B,), p (B, K) detached)`. Raises if a prompt has
    no valid response.
    """
    _check_same_shape(2, seq_logps=seq_logps, lengths=lengths, rewards=rewards, mask=mask)
    mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError("every prompt needs at least one valid response (a row of `mask` is all False)")
    p = seq_logps / lengths.to(seq_logps.dtype).clamp(min=1) ** length_penalty  # (B, K)
    diff = p.unsqueeze(2) - p.unsqueeze(1)  # (B, K, K)  [b, i, j] = p_i - p_j
    worse = rewards.unsqueeze(2) < rewards.unsqueeze(1)  # (B, K, K)  r_i < r_j
    valid = mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, K, K)
    # torch.where, not multiplication, so padding scores (possibly inf/nan) cannot leak in.
    pair_losses = torch.where(worse & valid, diff.clamp(min=0), torch.zeros_like(diff))  # (B, K, K)
    best_index = rewards.masked_fill(~mask, float("-inf")).argmax(dim=1)  # (B,)
    return pair_losses, best_index, p.detach()


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    kl: torch.Tensor | float,
    desirable: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO (Ethayarajh et al. 2024, Eq. 7), per pointwise completion, as in TRL 1.16.

    `policy_logps`, `reference_logps` are `(B,)` summed log-probs of each completion; `desirable`
    is `(B,)` bool. `kl` is the reference point z: the batch mean (gathered across ranks by the
    caller) of `log pi(y'|x) - log pi_ref(y'|x)` over mismatched completions y'. It is detached and
    clamped at 0 here, as TRL does, so the caller may pass the raw mean.

        logratio = log pi(y) - log pi_ref(y)
        desirable:   losses = lambda_D * (1 - sigmoid(beta * (logratio - z)))
        undesirable: losses = lambda_U * (1 - sigmoid(beta * (z - logratio)))

    Unlike TRL, losses stay in input order (TRL concatenates desirable then undesirable; the
    mean is the same). Returns `(losses, rewards)`, each `(B,)`; rewards = `beta * logratio`, detached.
    """
    _check_same_shape(1, policy_logps=policy_logps, reference_logps=reference_logps, desirable=desirable)
    z = torch.as_tensor(kl, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    if z.numel() != 1:
        raise ValueError(f"kl must be a scalar (the batch-mean reference point), got shape {tuple(z.shape)}")
    z = z.reshape(()).clamp(min=0)
    logratios = policy_logps - reference_logps  # (B,)
    desirable = desirable.bool()
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z)))  # (B,)
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z - logratios)))  # (B,)
    losses = torch.where(desirable, desirable_losses, undesirable_losses)  # (B,)
    return losses, beta * logratios.detach()
