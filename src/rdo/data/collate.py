"""Batches that keep every per-row value (weight, reference log-probs, row id) on its own row.

Every layout is one stack of right-padded prompt+response sequences for a single forward:

- pairs:    rows [0, B) are prompt+chosen, rows [B, 2B) are prompt+rejected;
- ranked:   all K_b responses of prompt b, prompt by prompt: (sum_b K_b, T), with a (B, Kmax)
            `response_mask` saying which slots of the padded (B, Kmax) layout are real;
- unpaired: rows [0, B) are prompt+completion, rows [B, 2B) are prompt+KL completion (a fixed
            mismatched completion, for KTO's reference point).

`loss_mask` is 1 exactly on the response tokens (its end — EOS or the chat template's end of
turn — included), aligned with `input_ids`; log-prob code shifts it by one.

With prefix sharing (`prefix_shared_batch`) a prompt is stored once, followed by all its responses:
one row `[prompt | chosen | rejected]` per pair. `segment_ids` says which part each token is,
`position_ids` restart after the prompt for every response, and `response_units` maps each
response to its row in the layout above, so log-probs come back in the same (2B,) / (sum K,) order.
The attention mask (each response sees the prompt and itself) is built from these at forward time
(`rdo.core.prefix`).
"""

from __future__ import annotations

import torch

# Per-row scalars that ride along with each example, if present in the features.
ROW_FLOATS = ("rdo_weight", "ref_chosen_logps", "ref_rejected_logps", "ref_logps", "ref_kl_logps")


def pad_sequences(seqs: list[list[int]], pad_id: int, multiple_of: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence (rounded up to `multiple_of`): (ids, attention_mask)."""
    longest = max(len(s) for s in seqs)
    longest = -(-longest // multiple_of) * multiple_of
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def prompt_response_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int, multiple_of: int = 1) -> dict:
    """`input_ids`, `attention_mask` and `loss_mask` for prompt+response sequences."""
    ids, attn = pad_sequences([p + r for p, r in zip(prompts, responses)], pad_id, multiple_of)
    loss_mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        loss_mask[i, len(p) : len(p) + len(r)] = 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


def prefix_shared_batch(prompts: list[list[int]], responses: list[list[list[int]]], units: list[list[int]],
                        pad_id: int, multiple_of: int = 1) -> dict:
    """One right-padded row per prompt: `[prompt | response_1 | ... | response_k]` (prefix sharing).

    `units[b][j]` is the output slot of prompt b's j-th response: its row in `prompt_response_batch`'s
    layout. Besides `input_ids`, `attention_mask` (1 on real tokens) and `loss_mask` (1 on response
    tokens), all (B, T):
      position_ids: 0.. over the prompt, then restarting at len(prompt) for every response;
      segment_ids:  0 on the prompt, j + 1 on response j, -1 on padding;
    and response_units (B, Kmax): units[b][j], -1 where row b has fewer responses.
    """
    seqs = [p + [t for r in rs for t in r] for p, rs in zip(prompts, responses)]
    ids, attn = pad_sequences(seqs, pad_id, multiple_of)
    positions = torch.zeros_like(ids)
    segments = torch.full_like(ids, -1)
    k_max = max(len(rs) for rs in responses)
    response_units = torch.full((len(prompts), k_max), -1, dtype=torch.long)  # (B, Kmax)
    for b, (p, rs) in enumerate(zip(prompts, responses)):
        n = len(p)
        positions[b, :n] = torch.arange(n)
        segments[b, :n] = 0
        start = n
        for j, r in enumerate(rs):
            positions[b, start : start + len(r)] = torch.arange(n, n + len(r))
            segments[b, start : start + len(r)] = j + 1
            start += len(r)
        response_units[b, : len(rs)] = torch.tensor(units[b], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": (segments > 0).long(), "position_ids": positions,
            "segment_ids": segments, "response_units": response_units}


class PairCollator:
    """Collates encoded pairs into one concatenated [chosen; rejected] batch, or with `prefix_sharing`
    into one `[prompt | chosen | rejected]` row per pair whose log-probs come back in the same order."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1, prefix_sharing: bool = False):
        self.pad_id, self.multiple_of, self.prefix_sharing = pad_id, pad_to_multiple_of, prefix_sharing

    def __call__(self, features: list[dict]) -> dict:
        prompts = [f["prompt_ids"] for f in features]
        if self.prefix_sharing:
            n = len(features)
            batch = prefix_shared_batch(prompts, [[f["chosen_ids"], f["rejected_ids"]] for f in features],
                                        [[b, n + b] for b in range(n)], self.pad_id, self.multiple_of)
        else:
            responses = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
            batch = prompt_response_batch(prompts + prompts, responses, self.pad_id, self.multiple_of)
        batch["rdo_row"] = torch.tensor([f["rdo_row"] for f in features], dtype=torch.long)  # (B,)
        for key in ROW_FLOATS:
            if key in features[0]:
                batch[key] = torch.tensor([float(f[key]) for f in features], dtype=torch.float32)  # (B,)
        return batch


class RankedCollator:
    """Collates ranked rows (K_b responses each, K_b may differ) into one forward plus (B, Kmax) masks.

    `rdo_weight` is per ordered pair: row b's K_b x K_b matrix, zero-padded to (B, Kmax, Kmax).
    With `prefix_sharing`, one `[prompt | y_1 | ... | y_K]` row per prompt (the prompt computed once,
    not K times), whose log-probs come back in the same (sum K,) order.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1, prefix_sharing: bool = False):
        self.pad_id, self.multiple_of, self.prefix_sharing = pad_id, pad_to_multiple_of, prefix_sharing

    def __call__(self, features: list[dict]) -> dict:
        if self.prefix_sharing:
            starts = [0]
            for f in features:
                starts.append(starts[-1] + len(f["responses_ids"]))
            batch = prefix_shared_batch([f["prompt_ids"] for f in features], [f["responses_ids"] for f in features],
                                        [list(range(s, e)) for s, e in zip(starts, starts[1:])], self.pad_id, self.multiple_of)
        else:
            prompts = [f["prompt_ids"] for f in features for _ in f["responses_ids"]]
            responses = [r for f in features for r in f["responses_ids"]]
            batch = prompt_response_batch(prompts, responses, self.pad_id, self.multiple_of)  # (sum K, T)
        k_max = max(len(f["responses_ids"]) for f in features)
        response_mask = torch.zeros(len(features), k_max, dtype=torch.bool)  # (B, Kmax)
        scores = torch.zeros(len(features), k_max, dtype=torch.float32)  # (B, Kmax)
        weights = torch.zeros(len(features), k_max, k_max, dtype=torch.float32)  # (B, Kmax, Kmax)
        for b, f in enumerate(features):
            k = len(f["responses_ids"])
            response_mask[b, :k] = True
            scores[b, :k] = torch.tensor(f["scores"], dtype=torch.float32)
            if "rdo_weight" in f:
                weights[b, :k, :k] = torch.tensor(f["rdo_weight"], dtype=torch.float32)
        batch.update(response_mask=response_mask, scores=scores)
        if "rdo_weight" in features[0]:
            batch["rdo_weight"] = weights
        batch["rdo_row"] = torch.tensor([f["rdo_row"] for f in features], dtype=torch.long)  # (B,)
        return batch


class UnpairedCollator:
    """Collates pointwise examples: rows [0, B) prompt+completion, rows [B, 2B) prompt+KL completion."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1):
        self.pad_id, self.multiple_of = pad_id, pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        prompts = [f["prompt_ids"] for f in features]
        responses = [f["completion_ids"] for f in features] + [f["kl_completion_ids"] for f in features]
        batch = prompt_response_batch(prompts + prompts, responses, self.pad_id, self.multiple_of)  # (2B, T)
        batch["label"] = torch.tensor([bool(f["label"]) for f in features], dtype=torch.bool)  # (B,) desirable
        batch["rdo_row"] = torch.tensor([f["rdo_row"] for f in features], dtype=torch.long)  # (B,)
        for key in ROW_FLOATS:
            if key in features[0]:
                batch[key] = torch.tensor([float(f[key]) for f in features], dtype=torch.float32)  # (B,)
        return batch
