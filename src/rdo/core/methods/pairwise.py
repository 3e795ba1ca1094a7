"""Pairwise methods on (prompt, chosen, rejected): DPO, IPO (with a reference) and SimPO (without).

Chosen and rejected go through the policy in one concatenated forward (rows [0, B) and [B, 2B)),
or, with prefix sharing, one `[prompt | chosen | rejected]` row per pair whose log-probs come back
in the same (2B,) order (rdo.core.prefix); the steps below read either.
"""

from __future__ import annotations

import torch

from rdo.core import losses as L
from rdo.data.collate import PairCollator
from rdo.core.forward import forward_logps
from rdo.core.methods.base import Method, StepOutput

PAIR_FIELDS = ("input_ids", "attention_mask", "loss_mask", "rdo_weight")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def pair_reference(model, batch) -> dict[str, torch.Tensor]:
    logps, _ = forward_logps(model, batch)  # (2B,)
    chosen, rejected = logps.chunk(2)
    return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}


def _pair_metrics(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, weights) -> dict:
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": chosen_logps.detach(),
        "logps/rejected": rejected_logps.detach(),
        "weights/mean": weights,
    }


def dpo_step(args, model, batch, reference) -> StepOutput:
    logps, _ = forward_logps(model, batch)  # one concatenated forward: (2B,)
    chosen, rejected = logps.chunk(2)  # (B,), (B,)
    ref = reference(batch)
    losses, cr, rr = L.dpo_loss(chosen, rejected, ref["ref_chosen_logps"], ref["ref_rejected_logps"], args.beta, args.label_smoothing)
    w = batch["rdo_weight"]
    return StepOutput(losses, w, _pair_metrics(cr, rr, chosen, rejected, w))


def ipo_step(args, model, batch, reference) -> StepOutput:
    logps, lengths = forward_logps(model, batch)  # (2B,), (2B,)
    chosen, rejected = logps.chunk(2)
    len_c, len_r = lengths.chunk(2)
    ref = reference(batch)
    losses, cr, rr = L.ipo_loss(
        chosen, rejected, ref["ref_chosen_logps"], ref["ref_rejected_logps"], len_c, len_r,
        beta=args.beta, average_log_ratios=args.ipo_average_log_ratios,
    )
    w = batch["rdo_weight"]
    return StepOutput(losses, w, _pair_metrics(cr, rr, chosen, rejected, w))


def simpo_step(args, model, batch, reference) -> StepOutput:
    """SimPO+rc: reference-free, on log-probs averaged over each response's tokens."""
    logps, lengths = forward_logps(model, batch)  # (2B,), (2B,)
    avg_logps = logps / lengths.clamp(min=1)  # (2B,)
    chosen, rejected = avg_logps.chunk(2)  # (B,), (B,)
    losses, cr, rr = L.simpo_loss(chosen, rejected, args.beta, args.simpo_gamma, args.label_smoothing)
    w = batch["rdo_weight"]
    sum_chosen, sum_rejected = logps.chunk(2)
    return StepOutput(losses, w, _pair_metrics(cr, rr, sum_chosen, sum_rejected, w))


def _pair_collator(pad_id: int, multiple_of: int, prefix_sharing: bool = False, padding_free: bool = False):
    return PairCollator(pad_id, multiple_of, prefix_sharing, padding_free)


DPO = Method("dpo", ("pair",), PAIR_FIELDS, _pair_collator, dpo_step,
             needs_reference=True, ref_columns=REF_COLUMNS, ref_step=pair_reference, options=("beta", "label_smoothing"))
IPO = Method("ipo", ("pair",), PAIR_FIELDS, _pair_collator, ipo_step,
             needs_reference=True, ref_columns=REF_COLUMNS, ref_step=pair_reference, options=("beta", "ipo_average_log_ratios"))
SIMPO = Method("simpo", ("pair",), PAIR_FIELDS, _pair_collator, simpo_step, options=("beta", "simpo_gamma", "label_smoothing"))
