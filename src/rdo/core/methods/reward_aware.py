"""Methods that read the reward difference R inside the loss, not only as the weight R^alpha.

- odpo: DPO with an offset that grows with R (Amini et al. 2024, arXiv 2402.10571).
- mmpo: DPO with the soft label sigmoid(gamma * R) (Kim et al. 2024, arXiv 2410.03145).
- rpo:  the implicit reward gap fitted to eta * R, by squared distance or a Bernoulli KL
        (Sun et al. 2025, arXiv 2502.00203; NeMo-Aligner's rpo_sq / rpo_bwd_kl / rpo_fwd_kl).

Every pair carries its raw R (`reward_diff`, from `--coef_column` or `--score_chosen_column` /
`--score_rejected_column`) whatever alpha is; the weight R^alpha (after the R <= 0 policy and
normalisation) still multiplies each loss in the trainer's one reduction. Pairs only, with a reference.
"""

from __future__ import annotations

from rdo.core import losses as L
from rdo.core.forward import forward_logps
from rdo.core.methods.base import Method, StepOutput
from rdo.core.methods.pairwise import PAIR_FIELDS, REF_COLUMNS, _pair_collator, _pair_metrics, pair_reference

REWARD_FIELDS = PAIR_FIELDS + ("reward_diff",)


def _forward(model, batch, reference):
    logps, _ = forward_logps(model, batch)  # one concatenated forward: (2B,)
    chosen, rejected = logps.chunk(2)  # (B,), (B,)
    ref = reference(batch)
    return chosen, rejected, ref["ref_chosen_logps"], ref["ref_rejected_logps"], batch["reward_diff"]


def _output(losses, cr, rr, chosen, rejected, batch, extra: dict) -> StepOutput:
    w = batch["rdo_weight"]
    return StepOutput(losses, w, _pair_metrics(cr, rr, chosen, rejected, w) | extra)


def odpo_step(args, model, batch, reference) -> StepOutput:
    chosen, rejected, ref_c, ref_r, R = _forward(model, batch, reference)
    losses, cr, rr = L.odpo_loss(chosen, rejected, ref_c, ref_r, R, args.beta, args.odpo_offset_scale)
    return _output(losses, cr, rr, chosen, rejected, batch, {"odpo/offset": L.odpo_offset(R, args.odpo_offset_scale)})


def mmpo_step(args, model, batch, reference) -> StepOutput:
    chosen, rejected, ref_c, ref_r, R = _forward(model, batch, reference)
    losses, cr, rr = L.mmpo_loss(chosen, rejected, ref_c, ref_r, R, args.beta, args.mmpo_gamma)
    label = L.soft_label_logits(R, args.mmpo_gamma).sigmoid()
    return _output(losses, cr, rr, chosen, rejected, batch, {"mmpo/label": label})


def rpo_step(args, model, batch, reference) -> StepOutput:
    chosen, rejected, ref_c, ref_r, R = _forward(model, batch, reference)
    losses, cr, rr = L.rpo_loss(chosen, rejected, ref_c, ref_r, R, args.beta, args.rpo_eta, args.rpo_variant)
    return _output(losses, cr, rr, chosen, rejected, batch, {})


def _method(name, step, options) -> Method:
    return Method(name, ("pair",), REWARD_FIELDS, _pair_collator, step, needs_reference=True, ref_columns=REF_COLUMNS,
                  ref_step=pair_reference, options=("beta",) + options, reads_reward_diff=True)


ODPO = _method("odpo", odpo_step, ("odpo_offset_scale",))
MMPO = _method("mmpo", mmpo_step, ("mmpo_gamma",))
RPO = _method("rpo", rpo_step, ("rpo_variant", "rpo_eta"))
