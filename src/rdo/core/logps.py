"""Per-sequence log-probabilities of response tokens, with memory that does not grow with B x T x V.

Two paths give the same numbers (tests/test_logps.py checks values and gradients):

- **chunked** (default): the model runs with its LM head swapped for a capture, so no logits are
  made at all; the head is then applied only at the positions that predict a response token, a
  chunk of positions at a time, inside one autograd function (`LinearLogProb`) that keeps only the
  (N, H) hidden states and recomputes each chunk's logits in backward. Peak extra memory is one
  (chunk, V) fp32 block, not (B, T, V) logits plus an fp32 log-softmax per row saved for backward.
- **full**: the model's own logits (only at response positions, via `logits_to_keep`), then a
  row-wise fp32 log-softmax. Used where the chunked path cannot be trusted: the first call for each
  model compares the two on one row and falls back (with a warning) when they differ — models that
  post-process logits (Gemma-2 soft-capping, Cohere's logit scale) or adapt the LM head (LoRA on
  lm_head) — and under DeepSpeed ZeRO-3, whose partitioned head weight cannot be read directly.
"""

from __future__ import annotations

import logging
import os
import weakref
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

# fp32 elements per (chunk, V) block: 2**26 = 256 MiB; RDO_LOGPS_CHUNK_ELEMENTS overrides.
CHUNK_ELEMENTS = int(os.environ.get("RDO_LOGPS_CHUNK_ELEMENTS", 2**26))
_CHECKED: dict[int, bool] = {}  # id(head weight) -> the chunked path matched the full one; dropped when the weight is freed


class LinearLogProb(torch.autograd.Function):
    """log_softmax(hidden @ weight.T + bias)[i, targets[i]] for (N, H) hidden, in chunks of positions.

    Forward keeps only the inputs; backward recomputes each chunk's logits, so neither the (N, V)
    logits nor their softmax are ever saved. Gradients: d logp_i / d logits_i = onehot(t_i) - p_i.

    Backward runs under the autocast the forward ran under (what `torch.amp.custom_fwd/custom_bwd`
    do, here for the inputs' device type rather than one fixed at import): the backward pass runs
    outside the training step's autocast, and logits recomputed in fp32 would give another softmax
    than the forward's bf16 logits did.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        dev = hidden.device.type
        ctx.autocast = dict(device_type=dev, dtype=torch.get_autocast_dtype(dev), enabled=torch.is_autocast_enabled(dev))
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)  # (N,)
        for s in range(0, hidden.shape[0], chunk):
            logits = _logits(hidden[s : s + chunk], weight, bias)  # (C, V) fp32
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1) - torch.logsumexp(logits, 1)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        with torch.autocast(**ctx.autocast):
            return LinearLogProb._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        hidden, weight, bias, targets = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        # accumulate in the weight's dtype: exact in fp32; in bf16 as autograd's own matmul grads would be
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        grad_out = grad_out.float()
        for s in range(0, hidden.shape[0], ctx.chunk):
            h, t, g = hidden[s : s + ctx.chunk], targets[s : s + ctx.chunk], grad_out[s : s + ctx.chunk]
            d = _logits(h, weight, bias)  # (C, V) fp32, recomputed
            d.sub_(torch.logsumexp(d, 1, keepdim=True)).exp_()  # softmax, in place
            d.mul_(-g[:, None])
            d.scatter_add_(1, t[:, None], g[:, None])  # d = g * (onehot - p)
            d = d.to(weight.dtype)
            if need_h:
                grad_h[s : s + ctx.chunk] = (d @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(d.T, h.to(weight.dtype))
            if need_b:
                grad_b += d.sum(0)
        return (grad_h, grad_w,
                grad_b.to(bias.dtype) if need_b else None, None, None)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] one (T, V) row at a time in fp32 (the benchmarks' row-wise baseline)."""
    return torch.stack([torch.log_softmax(row.float(), -1).gather(-1, i.unsqueeze(-1)).squeeze(-1) for row, i in zip(logits, index)])


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(h, weight, bias).float()  # the op nn.Linear runs, so autocast treats it alike


def linear_logprobs(hidden, weight, bias, targets, chunk: int | None = None) -> torch.Tensor:
    """(N,) fp32 log-probs of `targets` under the linear head, without keeping (N, V) anything."""
    if chunk is None:
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return LinearLogProb.apply(hidden, weight, bias, targets, chunk)


# --- the two paths -------------------------------------------------------------------------------

def _unwrap(model):
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    return model


@contextmanager
def _captured_head(head):
    """Run the model with `head` returning a zero-width tensor; its input (the hidden states) is kept."""
    box: list = []
    original = head.forward

    def capture(hidden, *args, **kwargs):
        # the autocast the head would have run under (accelerate puts it around model.forward only)
        dev = hidden.device.type
        box.append((hidden, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)))
        # A zero-width output that still depends on the hidden states and the head's parameters, so
        # DDP's search for unused parameters (it walks back from the forward's outputs) counts them.
        bias = getattr(head, "bias", None)
        return torch.nn.functional.linear(hidden, head.weight[:0], None if bias is None else bias[:0])

    head.forward = capture
    try:
        yield box
    finally:
        head.forward = original


def _keep_mask(loss_mask: torch.Tensor) -> torch.Tensor:
    """(N, T) bool: position t is kept when it predicts a response token t + 1."""
    keep = torch.zeros_like(loss_mask, dtype=torch.bool)
    keep[:, :-1] = loss_mask[:, 1:].bool()
    return keep


def _sum_by_row(token_logps: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = keep.nonzero()[:, 0]  # (K,) row of each kept position, row-major like boolean indexing
    n = keep.shape[0]
    sums = torch.zeros(n, dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return sums, keep.sum(1).to(token_logps.dtype)  # (N,), (N,)


def head_logps(model, inputs: dict, keep: torch.Tensor, targets: torch.Tensor, chunked: bool,
               src: torch.Tensor | None = None) -> torch.Tensor:
    """(M,) fp32 log-probs of `targets` from one forward of `model(**inputs)`.

    `keep` (N, T) bool marks the positions whose output is needed; token m is predicted by the
    `src[m]`-th kept position in row-major order (default: the m-th; prefix sharing reads a prompt's
    last position once per response). `chunked`: the LM head applied here in chunks (`LinearLogProb`),
    else the model's own logits at the kept positions, log-softmaxed in fp32 rows.
    """
    if chunked:
        head = _unwrap(model).get_output_embeddings()
        with _captured_head(head) as box:
            model(**inputs, use_cache=False, logits_to_keep=keep)
        if len(box) != 1:
            raise RuntimeError(f"the LM head ran {len(box)} times in one forward")
        hidden, autocast_on, autocast_dtype = box[0]
        if hidden.dim() == 3:  # the model ignored the boolean mask: select the positions here
            hidden = hidden[keep]
        if src is not None:
            hidden = hidden[src]  # (M, H); backward sums a shared position's gradients
        with torch.autocast(hidden.device.type, dtype=autocast_dtype, enabled=autocast_on):
            return linear_logprobs(hidden, head.weight, getattr(head, "bias", None), targets)
    try:
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (K, V)
        if logits.dim() != 2:
            raise TypeError("logits_to_keep mask not applied")
    except TypeError:  # a model without boolean logits_to_keep: all positions, then select
        logits = model(**inputs, use_cache=False).logits[keep]
    if not targets.numel():
        return logits.new_zeros(0).float()
    rows = torch.arange(targets.shape[0], device=targets.device) if src is None else src
    return torch.cat([torch.log_softmax(logits[r].float(), -1).gather(-1, t[:, None]).squeeze(-1)
                      for r, t in zip(rows.split(4096), targets.split(4096))])


def _padded_inputs(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def full_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own logits at the response positions, then an fp32 log-softmax per row."""
    keep = _keep_mask(batch["loss_mask"])
    targets = batch["input_ids"][:, 1:][batch["loss_mask"][:, 1:].bool()]  # (K,)
    return _sum_by_row(head_logps(model, _padded_inputs(batch), keep, targets, chunked=False), keep)


def chunked_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The head applied only at response positions, in chunks, inside `LinearLogProb`."""
    keep = _keep_mask(batch["loss_mask"])
    targets = batch["input_ids"][:, 1:][batch["loss_mask"][:, 1:].bool()]  # (K,)
    return _sum_by_row(head_logps(model, _padded_inputs(batch), keep, targets, chunked=True), keep)


def _chunked_allowed(model) -> bool:
    """Chunked log-probs are used once they matched the full path on this model (checked on one row)."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return False
    except ImportError:
        pass
    head = _unwrap(model).get_output_embeddings() if hasattr(_unwrap(model), "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or type(head) is not torch.nn.Linear:
        return False
    return True


def _verified(model, batch: dict) -> bool:
    weight = _unwrap(model).get_output_embeddings().weight
    key = id(weight)
    if key not in _CHECKED:
        one = {k: batch[k][:1] for k in ("input_ids", "attention_mask", "loss_mask")}
        modes = {m: m.training for m in model.modules()}  # dropout (LoRA's too) off: two random forwards never agree
        model.eval()
        with torch.no_grad():
            try:
                a, _ = chunked_logps(model, one)
                b, _ = full_logps(model, one)
                ok = bool(torch.allclose(a, b, rtol=1e-5, atol=1e-4))
            except Exception as e:  # noqa: BLE001 - any failure means: use the model's own logits
                log.warning("chunked log-probs unavailable for this model (%s); using its full logits", e)
                ok = False
            finally:
                for m, training in modes.items():
                    m.training = training
        if not ok:
            log.warning("chunked log-probs differ from the model's own logits on this model; using the full logits")
        _CHECKED[key] = ok
        weakref.finalize(weight, _CHECKED.pop, key, None)  # a new model at the same address is checked anew
    return _CHECKED[key]


def use_chunked(model, batch: dict) -> bool:
    """Whether `model`'s log-probs go through the chunked head (checked once per model on a padded `batch`)."""
    return os.environ.get("RDO_LOGPS", "chunked") == "chunked" and _chunked_allowed(model) and _verified(model, batch)
