"""Reference log-probs computed once, before training, and cached on disk.

With the reference values stored as columns of the dataset, training holds one model, not two.

The cache is keyed by the content the values depend on (never a path): the reference model's
fingerprint (config + weight bytes, or a hub commit), the tokenizer's (vocabulary, special tokens,
chat template), the truncation settings, the weights dtype and training precision, the method and
its reference columns, and every token id. A changed key means another file, so an fp32 and a bf16
cache never collide; the key is also stored in the file and checked on load. Values are indexed
by (`rdo_row`, `rdo_example`), so the same rows in another order find their own values
(`rdo_example` tells apart the two KTO examples made from one pair). The log says whether the
cache was used, or why it was recomputed (no cache yet, or which part of the key changed).
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdo.data.convert import row_key, token_ids_digest
from rdo.utils.fingerprint import digest

log = logging.getLogger(__name__)

KEY_COLUMNS = ("rdo_row", "rdo_example")
PREFIX = "rdo-ref-logps-"


def full_key(key: dict, features: list[dict]) -> dict:
    """`key` (the content fingerprints) plus a digest of every feature's row key and token ids."""
    return {**key, "token_ids": token_ids_digest(features)}  # in any row order: the same rows reordered share a cache


def cache_path(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / f"{PREFIX}{digest(key)[:16]}.pt"


def default_cache_dir(dataset_name: str) -> Path:
    """Next to a local data file when that folder is writable, else ~/.cache/rdo."""
    p = Path(dataset_name)
    folder = p.parent if p.is_file() else p if p.is_dir() else None
    if folder is not None and os.access(folder, os.W_OK):
        return folder
    return Path(os.environ.get("RDO_CACHE", Path.home() / ".cache" / "rdo"))


@torch.inference_mode()
def compute_reference(model, features: list[dict], collator, ref_step, batch_size: int, device, autocast=nullcontext) -> dict[str, list[float]]:
    """Run `ref_step` over all features in length-sorted batches; values come back in input order.

    `autocast` is the training steps' autocast context, so reference and policy log-probs are computed
    in the same precision and the log-ratios start at exactly 0.
    """
    model.eval()
    order = sorted(range(len(features)), key=lambda i: features[i]["length"], reverse=True)
    out: dict[str, list[float]] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(features), desc="reference log-probs", unit="row")
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collator([features[i] for i in idx]).items()}
        with autocast():
            values_by_col = ref_step(model, batch)
        for col, values in values_by_col.items():
            column = out.setdefault(col, [0.0] * len(features))
            for i, v in zip(idx, values.float().cpu().tolist()):
                if not math.isfinite(v):  # caught here, not as a NaN loss steps later
                    f = features[i]
                    raise ValueError(
                        f"reference {col} is {v} for data row {f.get('rdo_row')} (example {f.get('rdo_example', 0)}): "
                        "the reference model gives a non-finite log-prob there; check that row's text, or use "
                        "--torch_dtype float32 if the reference runs in float16"
                    )
                column[i] = v
        bar.update(len(idx))
        bar.set_postfix(rows_per_s=f"{(s + len(idx)) / (time.perf_counter() - start):.1f}")
    bar.close()
    return out


def compute_reference_sharded(model, features: list[dict], collator, ref_step, batch_size: int, device,
                              autocast=nullcontext) -> dict[str, list[float]]:
    """`compute_reference` with the rows split across processes (torchrun / accelerate), then gathered.

    Each process takes every world_size-th row of the length-sorted order, so the shares cost about the
    same, and pads its share to the same length (repeating its first row, whose extra value is dropped):
    every process then runs the same number of forwards, as engines that gather parameters layer by
    layer (ZeRO-3, FSDP) require. One process: exactly `compute_reference`.
    """
    from rdo.utils import distributed as dist

    with _full_parameters(model):
        return _compute_sharded(model, features, collator, ref_step, batch_size, device, autocast)


@contextmanager
def _full_parameters(model):
    """Under DeepSpeed ZeRO-3 the model arrives partitioned (zero.Init at load) and no engine exists yet:
    gather its parameters on every rank for the pass (each GPU then holds the whole model meanwhile)."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:
        yield
        return
    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def _compute_sharded(model, features, collator, ref_step, batch_size, device, autocast) -> dict[str, list[float]]:
    from rdo.utils import distributed as dist

    world = dist.world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
    if world == 1:
        return compute_reference(model, features, collator, ref_step, batch_size, device, autocast)
    order = sorted(range(len(features)), key=lambda i: (-features[i]["length"], i))
    mine = order[dist.rank() :: world]
    size = -(-len(features) // world)
    padded = mine + mine[:1] * (size - len(mine))
    values = compute_reference(model, [features[i] for i in padded], collator, ref_step, batch_size, device, autocast)
    parts = dist.gather({"rows": mine, "values": {c: v[: len(mine)] for c, v in values.items()}})
    out = {c: [0.0] * len(features) for c in values}
    seen = 0
    for part in parts:
        seen += len(part["rows"])
        for c, column in part["values"].items():
            for i, v in zip(part["rows"], column):
                out[c][i] = v
    if seen != len(features):
        raise RuntimeError(f"reference log-probs: the processes computed {seen} rows, expected {len(features)}")
    return out


def _why_recompute(cache_dir: Path, key: dict, about: dict) -> str:
    """'no cache', or which parts of the key differ from the newest cache made for the same `about`."""
    older = []
    for p in Path(cache_dir).glob(f"{PREFIX}*.pt"):
        try:
            stored = torch.load(p, weights_only=True)
        except Exception:  # an unreadable or pre-key cache file is simply not a candidate
            continue
        if stored.get("about") == about and isinstance(stored.get("key"), dict):
            older.append((p.stat().st_mtime_ns, stored["key"]))
    if not older:
        return "no cache for this reference and data"
    old = max(older, key=lambda t: t[0])[1]
    changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    return f"key changed: {', '.join(changed)}"


def load_or_compute(cache_dir: Path, key: dict, about: dict, model_fn, features, collator, ref_step, batch_size, device,
                    autocast=nullcontext) -> tuple[dict[str, list[float]], Path]:
    """Cached values for exactly these rows under this key, or computed (with `model_fn()`) and cached.

    `key` holds the content fingerprints (see the module doc); `about` (reference name, data source) only
    names the cache in the log. Returns (values by column in feature order, the cache file).
    """
    from rdo.utils import distributed as dist

    key = full_key(key, features)
    path = cache_path(cache_dir, key)
    keys = [row_key(f) for f in features]
    hit, reason = None, None
    if path.exists():
        cached = torch.load(path, weights_only=True)
        by_key = {k: i for i, k in enumerate(zip(cached["rdo_row"].tolist(), cached["rdo_example"].tolist()))}
        if cached.get("key") == key and all(k in by_key for k in keys):
            cols = [c for c in cached if torch.is_tensor(cached[c]) and c not in KEY_COLUMNS]
            hit = {c: [float(cached[c][by_key[k]]) for k in keys] for c in cols}
        else:
            reason = "the cache file does not match its key"
    else:
        reason = _why_recompute(cache_dir, key, about)
    if all(h for h in dist.gather(hit is not None)):  # every process uses the cache, or all compute together
        log.info("reference log-probs: using cache %s (key matches: reference weights, tokenizer, truncation, precision, method, token ids)", path)
        return hit, path
    log.info("reference log-probs: computing (%s)", reason or "another process has no cache")
    values = compute_reference_sharded(model_fn(), features, collator, ref_step, batch_size, device, autocast)
    if dist.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        key_columns = {"rdo_row": torch.tensor([k[0] for k in keys]), "rdo_example": torch.tensor([k[1] for k in keys])}
        torch.save({"key": key, "about": about, **key_columns,
                    **{c: torch.tensor(v, dtype=torch.float64) for c, v in values.items()}}, tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
        log.info("reference log-probs: cached to %s", path)
    dist.barrier()  # the cache exists for everyone before training starts
    return values, path
