"""One forward over a batch of responses -> their summed log-probs, whatever the batch's layout: padded rows
(rdo.core.logps: the chunked LM head, or the model's own logits) or prefix-shared rows (rdo.core.prefix)."""

from __future__ import annotations

from rdo.core.logps import chunked_logps, full_logps, use_chunked
from rdo.core.prefix import shared_forward_logps


def forward_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over `batch` -> (summed response log-probs, response lengths), both (N,) fp32.

    `batch["loss_mask"]` is 1 on response tokens; position t predicts token t + 1. A prefix-shared
    batch (it has `segment_ids`) gives the same (N,) values, in the same order (rdo.core.prefix).
    """
    if "segment_ids" in batch:
        return shared_forward_logps(model, batch)
    if use_chunked(model, batch):
        return chunked_logps(model, batch)
    return full_logps(model, batch)
