"""Reference log-probs computed once, before training, and cached on disk.

With the reference values stored as columns of the dataset, training holds one model, not two.
The cache is keyed by a hash of the reference model, the method's reference columns and every
token id, and indexed by `rdo_row`, so a reordered or filtered dataset still finds its own values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def cache_path(cache_dir: Path, model_id: str, columns: tuple[str, ...], features: list[dict]) -> Path:
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_id, "columns": columns}).encode())
    for f in features:
        h.update(json.dumps([f["rdo_row"], {k: v for k, v in f.items() if k.endswith("_ids")}], sort_keys=True).encode())
    return cache_dir / f"rdo-ref-logps-{h.hexdigest()[:16]}.pt"


def default_cache_dir(dataset_name: str) -> Path:
    """Next to a local data file when that folder is writable, else ~/.cache/rdo."""
    p = Path(dataset_name)
    folder = p.parent if p.is_file() else p if p.is_dir() else None
    if folder is not None and os.access(folder, os.W_OK):
        return folder
    return Path(os.environ.get("RDO_CACHE", Path.home() / ".cache" / "rdo"))


@torch.inference_mode()
def compute_reference(model, features: list[dict], collator, ref_step, batch_size: int, device) -> dict[str, list[float]]:
    """Run `ref_step` over all features in length-sorted batches; values come back in input order."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: features[i]["length"], reverse=True)
    out: dict[str, list[float]] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(features), desc="reference log-probs", unit="row")
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collator([features[i] for i in idx]).items()}
        for col, values in ref_step(model, batch).items():
            column = out.setdefault(col, [0.0] * len(features))
            for i, v in zip(idx, values.float().cpu().tolist()):
                column[i] = v
        bar.update(len(idx))
        bar.set_postfix(rows_per_s=f"{(s + len(idx)) / (time.perf_counter() - start):.1f}")
    bar.close()
    return out


def load_or_compute(path: Path, model_fn, features, collator, ref_step, batch_size, device) -> dict[str, list[float]]:
    """Read cached values for exactly these rows, or compute them (with `model_fn()`) and write the cache."""
    rows = [f["rdo_row"] for f in features]
    if path.exists():
        cached = torch.load(path, weights_only=True)
        by_row = {r: i for i, r in enumerate(cached["rdo_row"].tolist())}
        if all(r in by_row for r in rows):
            log.info("reference log-probs: using cache %s", path)
            return {c: [float(cached[c][by_row[r]]) for r in rows] for c in cached if c != "rdo_row"}
    values = compute_reference(model_fn(), features, collator, ref_step, batch_size, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"rdo_row": torch.tensor(rows), **{c: torch.tensor(v, dtype=torch.float64) for c, v in values.items()}}, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    log.info("reference log-probs: cached to %s", path)
    return values
