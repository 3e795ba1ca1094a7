"""The algorithm registry: a method name -> what data it needs, how it uses the reference, its loss.

Each method's `step` runs the policy forward for a batch and returns per-unit losses together with
the weight of each unit (a pair for DPO/IPO/SimPO), plus an optional unweighted extra term and
metrics. The trainer applies `weights * losses` in its single reduction; no loss sees a weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from rdo import losses as L
from rdo.data.collate import PairCollator
from rdo.logps import forward_logps


@dataclass
class StepOutput:
    losses: torch.Tensor  # per unit, e.g. (B,) pairs
    weights: torch.Tensor  # same shape as losses
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: torch.Tensor | None = None  # unweighted scalar added after the weighted mean (e.g. RRHF's SFT term)


@dataclass(frozen=True)
class Method:
    name: str
    data_kind: str  # "pair", "ranked" or "unpaired": the canonical record it trains on
    needs_reference: bool
    ref_columns: tuple[str, ...]  # per-row reference values cached by precomputation
    make_collator: Callable[[int, int], Callable]  # (pad_id, pad_to_multiple_of) -> collator
    step: Callable  # (args, model, batch, reference) -> StepOutput
    ref_step: Callable | None = None  # (model, batch) -> {column: (B,)} under inference_mode


# --- pairwise methods ------------------------------------------------------------------------

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


def _pair_collator(pad_id: int, multiple_of: int):
    return PairCollator(pad_id, multiple_of)


REGISTRY: dict[str, Method] = {
    "dpo": Method("dpo", "pair", True, ("ref_chosen_logps", "ref_rejected_logps"), _pair_collator, dpo_step, pair_reference),
    "ipo": Method("ipo", "pair", True, ("ref_chosen_logps", "ref_rejected_logps"), _pair_collator, ipo_step, pair_reference),
}


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method {name!r} is not available; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]
