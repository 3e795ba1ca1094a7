"""What a method is: the record kind it trains on, the batch fields its step reads, and its step.

A step runs the policy forward for a batch and returns per-unit losses (a pair for DPO/IPO/SimPO,
an ordered response pair for RRHF, a pointwise example for KTO) together with each unit's weight.
The trainer applies `weights * losses` in its single reduction; no loss sees a weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


REFERENCE_OPTIONS = ("precompute_ref", "ref_model_name_or_path", "ref_cache_dir")  # read by methods with a reference


@dataclass
class StepOutput:
    losses: torch.Tensor  # per unit; the first dim is the batch: (B,) pairs/examples, (B, K, K) RRHF pairs
    weights: torch.Tensor  # same shape as losses
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # any shape; averaged over elements
    extra: torch.Tensor | None = None  # unweighted scalar added after the weighted reduction (RRHF's SFT term)


@dataclass(frozen=True)
class Method:
    name: str
    data_kinds: tuple[str, ...]  # canonical record kinds it trains on; the first is native, others are converted
    batch_fields: tuple[str, ...]  # batch keys `step` reads; its collator must produce them
    make_collator: Callable[..., Callable]  # (pad_id, pad_to_multiple_of, prefix_sharing=False, padding_free=False) -> collator
    step: Callable  # (args, model, batch, reference) -> StepOutput
    needs_reference: bool = False
    ref_columns: tuple[str, ...] = ()  # per-row reference values cached by precomputation
    ref_step: Callable | None = None  # (model, batch) -> {column: (B,)} under inference_mode
    prepare: Callable | None = None  # (features, cfg) -> features: last per-row set-up after weighting
    options: tuple[str, ...] = ()  # the method-specific AlignConfig fields `step` reads; setting any other is refused
    reads_reward_diff: bool = False  # the loss reads each pair's raw R (batch field `reward_diff`) at every alpha

    @property
    def reads(self) -> tuple[str, ...]:
        """Every method-specific option the method uses: its own, plus the reference's when it has one."""
        return self.options + (REFERENCE_OPTIONS if self.needs_reference else ())

    @property
    def data_kind(self) -> str:
        """The record kind the method's collator takes (others are converted to it first)."""
        return self.data_kinds[0]
