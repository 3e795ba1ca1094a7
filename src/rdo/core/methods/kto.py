"""KTO+rc (paper appendix A.1): pointwise KTO, each example weighted by its pair's coefficient.

    z       = mean over the batch (and all processes) of log pi(y'|x) - log pi_ref(y'|x)   (detached)
    desirable:   lambda_D * (1 - sigmoid(beta * (log pi(y|x) - log pi_ref(y|x) - z)))
    undesirable: lambda_U * (1 - sigmoid(beta * (z - log pi(y|x) + log pi_ref(y|x))))

y' is a *mismatched* completion: another row's. TRL 1.16 builds it by rotating completions by one
inside each batch, which ties the estimate to the batch composition (it then requires sequential
sampling and batches > 1). rdo fixes y' per example once, at data preparation, with a seeded
permutation over source rows (`assign_kl_completions`): the reference log-probs of (x, y') can
then be precomputed like any other column, any sampler works, and odd or size-1 batches are fine.
Over an epoch each completion still serves as y' exactly once, as in TRL.
"""

from __future__ import annotations

import logging

import torch

from rdo.core import losses as L
from rdo.data.collate import UnpairedCollator
from rdo.data.convert import assign_kl_completions
from rdo.core.forward import forward_logps
from rdo.core.methods.base import Method, StepOutput

log = logging.getLogger(__name__)

BATCH_FIELDS = ("input_ids", "attention_mask", "loss_mask", "label", "rdo_weight")
SEQUENCE_KEYS = ("input_ids", "attention_mask", "loss_mask")


def kl_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z: the mean of `policy - reference` over the (B,) mismatched pairs, averaged over processes.

    Detached, and not clamped (kto_loss clamps at 0, as TRL does). Each process contributes the mean
    of its own batch; with torch.distributed initialised the means are averaged by all_reduce.
    """
    z = (policy_kl_logps.detach() - reference_kl_logps.detach()).mean()  # ()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        z = z.clone()
        torch.distributed.all_reduce(z)
        z = z / torch.distributed.get_world_size()
    return z


def _rows(batch: dict, start: int, stop: int) -> dict:
    return {k: batch[k][start:stop] for k in SEQUENCE_KEYS}


def kto_reference(model, batch) -> dict[str, torch.Tensor]:
    logps, _ = forward_logps(model, batch)  # (2B,): examples, then their KL completions
    ref, ref_kl = logps.chunk(2)
    return {"ref_logps": ref, "ref_kl_logps": ref_kl}


def kto_step(args, model, batch, reference) -> StepOutput:
    label = batch["label"]  # (B,) bool, True = desirable
    n = label.shape[0]
    logps, _ = forward_logps(model, _rows(batch, 0, n))  # (B,)
    with torch.no_grad():  # z is detached: no graph, no backward through the KL rows
        kl_logps, _ = forward_logps(model, _rows(batch, n, 2 * n))  # (B,)
    ref = reference(batch)
    z = kl_reference_point(kl_logps, ref["ref_kl_logps"])  # ()
    losses, rewards = L.kto_loss(
        logps, ref["ref_logps"], z, label, beta=args.beta,
        desirable_weight=args.kto_desirable_weight, undesirable_weight=args.kto_undesirable_weight,
    )  # (B,), (B,)
    w = batch["rdo_weight"]
    metrics = {
        "kl": z.clamp(min=0).reshape(1),
        "rewards/desirable": rewards[label],
        "rewards/undesirable": rewards[~label],
        "logps/desirable": logps.detach()[label],
        "logps/undesirable": logps.detach()[~label],
        "weights/mean": w,
    }
    return StepOutput(losses, w, metrics)


def kto_prepare(features: list[dict], cfg) -> list[dict]:
    """Fix each example's mismatched KL completion, and warn when the classes are badly balanced."""
    features = assign_kl_completions(features, seed=cfg.seed)
    n_d = sum(1 for f in features if f["label"])
    n_u = len(features) - n_d
    if n_d and n_u:
        ratio = cfg.kto_desirable_weight * n_d / (cfg.kto_undesirable_weight * n_u)
        if not 1.0 <= ratio <= 4 / 3:
            log.warning(
                "KTO: lambda_D * n_D / (lambda_U * n_U) = %.3g (n_D=%d, n_U=%d); the KTO paper recommends [1, 4/3]. "
                "Adjust --kto_desirable_weight / --kto_undesirable_weight.", ratio, n_d, n_u,
            )
    return features


KTO = Method(
    "kto", ("unpaired", "pair"), BATCH_FIELDS, lambda pad_id, multiple_of, prefix_sharing=False, padding_free=False: UnpairedCollator(pad_id, multiple_of),
    kto_step, needs_reference=True, ref_columns=("ref_logps", "ref_kl_logps"), ref_step=kto_reference,
    prepare=kto_prepare, options=("beta", "kto_desirable_weight", "kto_undesirable_weight"),
)
