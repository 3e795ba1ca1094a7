"""Reference log-probs computed once, before training, and cached on disk.

With the reference values stored as columns of the dataset, training holds one model, not two.
The cache is keyed by a hash of the reference model, the method's reference columns and every
token id, and indexed by (`rdo_row`, `rdo_example`), so a reordered or filtered dataset still finds
its own values (`rdo_example` tells apart the two KTO examples made from one pair).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdo.data.convert import row_key

log = logging.getLogger(__name__)

KEY_COLUMNS = ("rdo_row", "rdo_example")


def cache_path(cache_dir: Path, model_id: str, columns: tuple[str, ...], features: list[dict]) -> Path:
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_id, "columns": columns}).encode())
    for f in features:
        h.update(json.dumps([row_key(f), {k: v for k, v in f.items() if k.endswith("_ids")}], sort_keys=True).encode())
    return cache_dir / f"rdo-ref-logps-{h.hexdigest()[:16]}.pt"


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


def load_or_compute(path: Path, model_fn, features, collator, ref_step, batch_size, device, autocast=nullcontext) -> dict[str, list[float]]:
    """Read cached values for exactly these rows, or compute them (with `model_fn()`) and write the cache."""
    keys = [row_key(f) for f in features]
    if path.exists():
        cached = torch.load(path, weights_only=True)
        examples = cached.get("rdo_example", torch.zeros_like(cached["rdo_row"])).tolist()
        by_key = {k: i for i, k in enumerate(zip(cached["rdo_row"].tolist(), examples))}
        if all(k in by_key for k in keys):
            log.info("reference log-probs: using cache %s", path)
            return {c: [float(cached[c][by_key[k]]) for k in keys] for c in cached if c not in KEY_COLUMNS}
    values = compute_reference(model_fn(), features, collator, ref_step, batch_size, device, autocast)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    key_columns = {"rdo_row": torch.tensor([k[0] for k in keys]), "rdo_example": torch.tensor([k[1] for k in keys])}
    torch.save({**key_columns, **{c: torch.tensor(v, dtype=torch.float64) for c, v in values.items()}}, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    log.info("reference log-probs: cached to %s", path)
    return values
