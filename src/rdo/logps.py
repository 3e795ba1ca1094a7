"""Per-sequence log-probabilities of response tokens, without a full (B, T, V) log-softmax."""

from __future__ import annotations

import torch


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index], one (T, V) row of the batch at a time, in fp32.

    A full fp32 log-softmax materialises (B, T, V) — 1 GB for B=4, T=1024, V=64k. Row by row the
    extra memory is one (T, V) row: 1/B of that. `benchmarks/bench_logps.py` measured it at 0.8–1.0x
    the naive speed forward on CPU (fp32, (8, 512, 49152)) with 1/8 of the naive extra memory.
    bf16/fp16 logits are upcast per row, since a low-precision log-softmax is inaccurate.
    """
    # One expression per row, so each (T, V) temporary is freed before the next row's is made.
    out = [torch.log_softmax(row.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1) for row, idx in zip(logits, index)]
    return torch.stack(out)  # (B, T)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the masked (response) tokens and their counts, both (N,).

    Position t predicts token t+1, so the labels and mask are shifted left by one.
    """
    labels = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(logits.dtype if logits.is_floating_point() else torch.float32)
    token_logps = selective_log_softmax(logits[:, :-1], labels)  # (N, T-1)
    mask = mask.to(token_logps.dtype)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def forward_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over `batch` -> (summed response log-probs, response lengths), both (N,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return sequence_logps(logits, batch["input_ids"], batch["loss_mask"])
