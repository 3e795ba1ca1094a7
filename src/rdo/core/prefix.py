"""Prefix sharing: a prompt's responses read their log-probs from one sequence that holds the prompt once.

A prefix-shared row (rdo.data.collate.prefix_shared_batch) is `[prompt | response_1 | ... | response_k]`.
Three things make each response's log-probs those of its own `prompt + response` sequence:

- the attention mask: a token sees earlier tokens of the prompt and of its own segment, nothing else
  (padding sees only itself, so no softmax row is empty and nothing turns NaN);
- position ids restart at len(prompt) for every response (rotary embeddings see the same positions);
- read-out: response token t is predicted by position t - 1, except a response's first token, which
  is predicted by the prompt's last position; that position is read once per response, and its
  gradients add up in backward as two sequences' would.

The prompt's keys, values and MLP run once instead of once per response: the saving is
(k - 1) x len(prompt) tokens of work per prompt.

Padding-free rows (`pack`) hold several such groups, or several plain prompt+response sequences,
back to back; `document_ids` keep each token's attention inside its own group.

The mask goes to the model as a 4D tensor (transformers passes a 4D mask through unchanged): bool
for SDPA (True = attend), additive float for eager and others. Models with sliding-window layers
(Gemma-2, Qwen2 with use_sliding_window) get a {"full_attention", "sliding_attention"} mapping whose
sliding mask also drops keys `sliding_window` or more positions back, as the padded path does.

The first shared forward of each model is checked against the padded path on one row; where they
differ or the attention implementation refuses the mask (FlashAttention-2 takes no 4D mask), the
model falls back to the padded layout built from the same batch, with one warning.
"""

from __future__ import annotations

import logging
import weakref

import torch

from rdo.core.logps import _unwrap, chunked_logps, full_logps, head_logps, use_chunked
from rdo.data.collate import prompt_response_batch

log = logging.getLogger(__name__)

_CHECKED: dict[int, bool] = {}  # id(head weight) -> the shared layout matched the padded one on this model
# |shared - padded| allowed per response token, half precision or not. Measured on SmolLM2-135M: fp32 layouts
# agree to 1.5e-6 per token; in bf16 two padded batchings of the same rows already differ by up to 0.036,
# while a mask the attention ignores moved the rejected responses by 0.12-0.27 per token.
TOKEN_TOLERANCE = {True: 6e-2, False: 1e-4}


def attention_allowed(segment_ids: torch.Tensor, document_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, T) bool: query q may attend to key k.

    k <= q, both in the same document (packing), and k in the prompt or in q's own segment; padding
    (segment -1) sees itself only.
    """
    seg = segment_ids
    t = seg.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=seg.device).tril()  # (T, T)
    same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])  # (B, T, T) key is prompt or own segment
    real = seg >= 0
    allowed = causal & same & real[:, None, :] & real[:, :, None]
    if document_ids is not None:
        allowed &= document_ids[:, None, :] == document_ids[:, :, None]
    return allowed | torch.eye(t, dtype=torch.bool, device=seg.device)  # padding attends to itself


def _as_model_mask(allowed: torch.Tensor, impl: str | None, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, T) in the form the attention implementation adds or selects with."""
    allowed = allowed[:, None]
    if impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def model_attention_mask(model, batch: dict):
    """The 4D mask (or per-layer-type mapping) `model` gets for a prefix-shared batch."""
    inner = _unwrap(model)
    config = inner.config
    impl = getattr(config, "_attn_implementation", None)
    dtype = inner.get_input_embeddings().weight.dtype
    allowed = attention_allowed(batch["segment_ids"], batch.get("document_ids"))
    layer_types = set(getattr(config, "layer_types", None) or ())
    if "sliding_attention" not in layer_types:
        return _as_model_mask(allowed, impl, dtype)
    pos = batch["position_ids"]
    # the padded path's rule (transformers' sliding_window_overlay): keep k when q - k < sliding_window
    window = (pos[:, :, None] - pos[:, None, :]) < config.sliding_window  # (B, T, T)
    eye = torch.eye(allowed.shape[1], dtype=torch.bool, device=allowed.device)
    return {"full_attention": _as_model_mask(allowed, impl, dtype),
            "sliding_attention": _as_model_mask((allowed & window) | eye, impl, dtype)}


def read_out(batch: dict) -> dict:
    """Where each response token's log-prob is read, as flat (M,) tensors over the response tokens.

    Returns keep (B, T) bool (positions whose output is needed), src (M,) index of each token's
    predicting position among the kept ones (row-major), targets (M,) and units (M,) output slots,
    the tokens ordered by unit.
    A response token with no prompt before it (an empty prompt) is not predicted, as in the padded path.
    """
    seg, ids = batch["segment_ids"], batch["input_ids"]
    b, t = seg.shape
    idx = torch.arange(t, device=seg.device).expand(b, t)
    prev_same = torch.zeros_like(seg, dtype=torch.bool)
    prev_same[:, 1:] = seg[:, 1:] == seg[:, :-1]
    last_prompt = torch.where(seg == 0, idx, -1).cummax(1).values  # (B, T) latest prompt position so far
    if "document_ids" in batch:  # packed rows: a prompt of an earlier document is not this one's
        doc = batch["document_ids"]
        last_prompt = torch.where(doc.gather(1, last_prompt.clamp(min=0)) == doc, last_prompt, -1)
    pred = torch.where(prev_same, idx - 1, last_prompt)  # (B, T) the position that predicts token t
    rows, cols = ((seg > 0) & (pred >= 0)).nonzero(as_tuple=True)  # (M,), (M,)
    pred_pos = pred[rows, cols]
    keep = torch.zeros_like(seg, dtype=torch.bool)
    keep[rows, pred_pos] = True
    rank = keep.flatten().cumsum(0) - 1  # (B*T,) index of a kept position among the kept ones
    src = rank[rows * t + pred_pos]
    units = batch["response_units"][rows, seg[rows, cols] - 1]
    # tokens in unit order, as the padded rows hold them: sums then add in the same order (bitwise the padded
    # path's on CPU, where index_add over interleaved units was not)
    order = units.argsort(stable=True)
    return {"keep": keep, "src": src[order], "targets": ids[rows, cols][order], "units": units[order]}


def shared_logps(model, batch: dict, chunked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(U,) summed log-probs and lengths per output unit, from one forward of the prefix-shared batch."""
    r = read_out(batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": model_attention_mask(model, batch),
              "position_ids": batch["position_ids"]}
    token_logps = head_logps(model, inputs, r["keep"], r["targets"], chunked, src=r["src"])  # (M,)
    n = int(batch["response_units"].max()) + 1
    sums = token_logps.new_zeros(n).index_add(0, r["units"], token_logps)
    lengths = token_logps.new_zeros(n).index_add(0, r["units"], torch.ones_like(token_logps))
    return sums, lengths


def unshare(batch: dict, pad_id: int = 0) -> dict:
    """The padded `prompt + response` batch (rdo.data.collate.prompt_response_batch) holding the same
    responses, one row per output unit in unit order."""
    seg, ids, units = batch["segment_ids"].cpu(), batch["input_ids"].cpu(), batch["response_units"].cpu()
    docs = batch["document_ids"].cpu() if "document_ids" in batch else torch.where(seg >= 0, 0, -1)
    by_unit = {}
    for b in range(ids.shape[0]):
        for j, u in enumerate(units[b].tolist()):
            if u >= 0:
                response = seg[b] == j + 1
                d = docs[b][response.nonzero()[0, 0]] if response.any() else docs[b][0]
                prompt = ids[b][(seg[b] == 0) & (docs[b] == d)].tolist()
                by_unit[u] = (prompt, ids[b][response].tolist())
    order = sorted(by_unit)
    if order != list(range(len(order))):
        raise ValueError(f"response_units {order} do not number the responses 0..{len(order) - 1}")
    padded = prompt_response_batch([by_unit[u][0] for u in order], [by_unit[u][1] for u in order], pad_id)
    return {k: v.to(batch["input_ids"].device) for k, v in padded.items()}


def _rows(batch: dict, rows: slice) -> dict:
    """Rows of a prefix-shared batch, its units renumbered from 0."""
    sub = {k: batch[k][rows] for k in ("input_ids", "attention_mask", "loss_mask", "position_ids", "segment_ids",
                                       "response_units") if k in batch}
    if "document_ids" in batch:
        sub["document_ids"] = batch["document_ids"][rows]
    units = sub["response_units"]
    real = units >= 0
    renumbered = torch.full_like(units, -1)
    renumbered[real] = units[real].argsort().argsort()  # dense ranks 0..n-1 in the original order
    sub["response_units"] = renumbered
    return sub


def verified(registry: dict, weight: torch.Tensor, model, batch: dict, run_shared, run_padded, close) -> bool:
    """Once per model (keyed by `weight`): `close(run_shared(one), run_padded(one))` on the batch's first row,
    `one` a prefix-shared batch (run_padded unshares it). An error or a mismatch logs one warning and is False."""
    key = id(weight)
    if key not in registry:
        one = _rows(batch, slice(0, 1))
        with torch.no_grad():
            try:
                got, want = run_shared(one), run_padded(one)
                ok = close(got, want)
                why = "" if ok else f"{got} vs {want} unshared"
            except Exception as e:  # noqa: BLE001 - any failure means: use the padded layout
                ok, why = False, f"{type(e).__name__}: {e}"
        if not ok:
            impl = getattr(_unwrap(model).config, "_attn_implementation", None)
            log.warning("prefix sharing is off for this model (attention %s: %s); using padded prompt+response rows",
                        impl, why)
        registry[key] = ok
        weakref.finalize(weight, registry.pop, key, None)  # a new model at the same address is checked anew
    return registry[key]


def _verified(model, batch: dict, chunked: bool) -> bool:
    """The shared layout's log-probs equal the padded layout's (per token, within TOKEN_TOLERANCE)."""
    weight = _unwrap(model).get_output_embeddings().weight
    half = weight.dtype != torch.float32 or torch.is_autocast_enabled(weight.device.type)

    def close(got, want) -> bool:
        (a, n), (b, m) = got, want
        return torch.equal(n, m) and bool(((a - b).abs() <= TOKEN_TOLERANCE[half] * m.clamp(min=1)).all())

    return verified(_CHECKED, weight, model, batch, lambda one: shared_logps(model, one, chunked),
                    lambda one: _padded_logps(model, unshare(one), chunked), close)


def _padded_logps(model, padded: dict, chunked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return chunked_logps(model, padded) if chunked else full_logps(model, padded)


def shared_forward_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward_logps` for a prefix-shared batch: (N,) sums and lengths in the padded layout's row order."""
    first = unshare(_rows(batch, slice(0, 1)))
    chunked = use_chunked(model, first)  # the head check, as for padded batches
    if _verified(model, batch, chunked):
        return shared_logps(model, batch, chunked)
    return _padded_logps(model, unshare(batch), chunked)
