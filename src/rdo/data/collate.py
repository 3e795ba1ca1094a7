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
ROW_FLOATS = ("rdo_weight", "reward_diff", "ref_chosen_logps", "ref_rejected_logps", "ref_logps", "ref_kl_logps")


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
                        pad_id: int, multiple_of: int = 1, pack: bool = False) -> dict:
    """One right-padded row per prompt: `[prompt | response_1 | ... | response_k]` (prefix sharing).

    `units[b][j]` is the output slot of prompt b's j-th response: its row in `prompt_response_batch`'s
    layout. Besides `input_ids`, `attention_mask` (1 on real tokens) and `loss_mask` (1 on response
    tokens), all (R, T):
      position_ids: 0.. over the prompt, then restarting at len(prompt) for every response;
      segment_ids:  0 on a prompt, j + 1 on the row's j-th response, -1 on padding;
      document_ids: which prompt of the row a token belongs to (0, 1, ...), -1 on padding;
    and response_units (R, Kmax): the row's j-th response's unit, -1 past the row's last response.
    `pack` (padding-free): every prompt's group goes into one row, back to back, so R = 1 and
    nothing is padded (up to `multiple_of`); without it R = B, one prompt per row.
    """
    groups = [[(b, p, rs)] for b, (p, rs) in enumerate(zip(prompts, responses))]
    if pack:
        groups = [[g[0] for g in groups]]
    seqs = [[t for _, p, rs in row for t in p + [t for r in rs for t in r]] for row in groups]
    ids, attn = pad_sequences(seqs, pad_id, multiple_of)
    positions = torch.zeros_like(ids)
    segments = torch.full_like(ids, -1)
    documents = torch.full_like(ids, -1)
    k_max = max(sum(len(rs) for _, _, rs in row) for row in groups)
    response_units = torch.full((len(groups), k_max), -1, dtype=torch.long)  # (R, Kmax)
    for i, row in enumerate(groups):
        start, j = 0, 0
        for d, (b, p, rs) in enumerate(row):
            n = len(p)
            positions[i, start : start + n] = torch.arange(n)
            segments[i, start : start + n] = 0
            documents[i, start : start + n] = d
            start += n
            for k, r in enumerate(rs):
                positions[i, start : start + len(r)] = torch.arange(n, n + len(r))
                segments[i, start : start + len(r)] = j + 1
                documents[i, start : start + len(r)] = d
                response_units[i, j] = units[b][k]
                start += len(r)
                j += 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": (segments > 0).long(), "position_ids": positions,
            "segment_ids": segments, "document_ids": documents, "response_units": response_units}


def grouped_batch(prompts: list[list[int]], responses: list[list[list[int]]], units: list[list[int]], pad_id: int,
                  multiple_of: int = 1, prefix_sharing: bool = False, padding_free: bool = False) -> dict:
    """Prompts with their responses (response j of prompt b is output unit units[b][j]) in one of three layouts:

    - padded rows (neither option): `prompt_response_batch`, row u = unit u;
    - prefix sharing: one `[prompt | response_1 | ... | response_k]` row per prompt;
    - padding-free: every sequence of the batch in one row, back to back (with prefix sharing, the
      prompt groups; without, one prompt+response document per unit).
    """
    if not prefix_sharing:  # one document per response, its prompt repeated
        flat = sorted((u, p, r) for p, rs, us in zip(prompts, responses, units) for r, u in zip(rs, us))
        if not padding_free:
            return prompt_response_batch([p for _, p, _ in flat], [r for _, _, r in flat], pad_id, multiple_of)
        prompts, responses, units = [p for _, p, _ in flat], [[r] for _, _, r in flat], [[u] for u, _, _ in flat]
    return prefix_shared_batch(prompts, responses, units, pad_id, multiple_of, pack=padding_free)


class PairCollator:
    """Collates encoded pairs into one concatenated [chosen; rejected] batch, or with `prefix_sharing`
    into one `[prompt | chosen | rejected]` row per pair, or with `padding_free` into one packed row;
    log-probs come back in the same (2B,) order from each (see `grouped_batch`)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1, prefix_sharing: bool = False, padding_free: bool = False):
        self.pad_id, self.multiple_of = pad_id, pad_to_multiple_of
        self.prefix_sharing, self.padding_free = prefix_sharing, padding_free

    def __call__(self, features: list[dict]) -> dict:
        n = len(features)
        batch = grouped_batch([f["prompt_ids"] for f in features], [[f["chosen_ids"], f["rejected_ids"]] for f in features],
                              [[b, n + b] for b in range(n)], self.pad_id, self.multiple_of,
                              self.prefix_sharing, self.padding_free)
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

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1, prefix_sharing: bool = False, padding_free: bool = False):
        self.pad_id, self.multiple_of = pad_id, pad_to_multiple_of
        self.prefix_sharing, self.padding_free = prefix_sharing, padding_free

    def __call__(self, features: list[dict]) -> dict:
        starts = [0]  # units numbered prompt by prompt: (sum K,)
        for f in features:
            starts.append(starts[-1] + len(f["responses_ids"]))
        batch = grouped_batch([f["prompt_ids"] for f in features], [f["responses_ids"] for f in features],
                              [list(range(s, e)) for s, e in zip(starts, starts[1:])], self.pad_id, self.multiple_of,
                              self.prefix_sharing, self.padding_free)
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
