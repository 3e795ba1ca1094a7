"""RRHF+rc (paper Sec. 2): rank each prompt's K responses by length-normalised log-prob, plus SFT.

    p_i     = sum_t log pi(y_i,t | x) / |y_i| ** length_penalty
    L_rank  = sum over pairs r_i < r_j of  R_ij^alpha * max(0, p_i - p_j)      (RRHF+rc, Sec. 2)
    L_sft   = -mean_t log pi(y_best,t | x)      (real tokens of the best-scored response only)
    L       = mean_b L_rank[b] + sft_weight * mean_b L_sft[b]

The ranking term is the weighted unit: each ordered pair carries its own weight (from the reward
model's score difference, or a difference-model column), and the trainer sums a prompt's pairs and
divides by the number of prompts. The SFT term is the unweighted regulariser L^reg of Eq. (1).
Unlike the reference implementation, batches hold several prompts with different K (masked).
"""

from __future__ import annotations

from rdo.core import losses as L
from rdo.data.collate import RankedCollator
from rdo.core.forward import forward_logps
from rdo.core.methods.base import Method, StepOutput

BATCH_FIELDS = ("input_ids", "attention_mask", "loss_mask", "response_mask", "scores", "rdo_weight")


def rrhf_step(args, model, batch, reference) -> StepOutput:
    logps, lengths = forward_logps(model, batch)  # (N,), N = sum_b K_b, prompt by prompt
    mask = batch["response_mask"]  # (B, K) bool, row-major in the same order as the N rows
    seq_logps = logps.new_zeros(mask.shape).masked_scatter(mask, logps)  # (B, K)
    seq_lengths = lengths.new_zeros(mask.shape).masked_scatter(mask, lengths)  # (B, K)
    scores = batch["scores"]  # (B, K)
    pair_losses, best, p = L.rrhf_loss(seq_logps, seq_lengths, scores, mask, args.rrhf_length_penalty)  # (B, K, K)

    best_logps = seq_logps.gather(1, best.unsqueeze(1)).squeeze(1)  # (B,)
    best_lengths = seq_lengths.gather(1, best.unsqueeze(1)).squeeze(1)  # (B,)
    sft = -best_logps / best_lengths.clamp(min=1)  # (B,) mean token NLL of the best response

    used = (scores.unsqueeze(2) < scores.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, K, K) r_i < r_j
    weights = batch["rdo_weight"]  # (B, K, K)
    metrics = {
        "rrhf/ranking": pair_losses.detach().sum((1, 2)),  # (B,) unweighted
        "rrhf/sft": sft.detach(),
        "rrhf/pair_accuracy": (p.unsqueeze(1) > p.unsqueeze(2))[used].float(),  # p_j > p_i for the better j
        "weights/mean": weights[used],
    }
    return StepOutput(pair_losses, weights, metrics, extra=args.rrhf_sft_weight * sft.mean())


RRHF = Method(
    "rrhf", ("ranked", "pair"), BATCH_FIELDS, lambda pad_id, multiple_of, prefix_sharing=False, padding_free=False: RankedCollator(
        pad_id, multiple_of, prefix_sharing, padding_free), rrhf_step,
    options=("rrhf_length_penalty", "rrhf_sft_weight"),
)
