"""`rdo align`: preference optimisation where each pair's loss is weighted by its coefficient."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from transformers import set_seed

from rdo.coefficients import format_stats
from rdo.config import AlignConfig
from rdo.data import load_records
from rdo.data.tokenize import Encoder, encode_records
from rdo.methods import Method, get_method
from rdo.models import add_lora, load_causal_lm, load_tokenizer
from rdo.reference import cache_path, default_cache_dir, load_or_compute

log = logging.getLogger("rdo.align")


def prepare_features(cfg: AlignConfig, method: Method, tokenizer) -> tuple[list[dict], dict]:
    """Load, validate and tokenise the data, then attach each row's weight. Returns (features, report)."""
    loaded = load_records(
        cfg.dataset_name, split=cfg.dataset_split, tokenizer=tokenizer,
        coef_column=cfg.coef_column if cfg.uses_coefficients else None, skip_invalid=cfg.skip_invalid,
    )
    if loaded.kind != method.data_kind:
        raise ValueError(
            f"{cfg.dataset_name}: {loaded.fmt} rows ({loaded.kind}) cannot train --method {method.name}, "
            f"which needs {method.data_kind} rows"
        )
    features = encode_records(
        loaded.records, Encoder(tokenizer, cfg.truncation), loaded.kind, cfg.dataset_name,
        skip_invalid=cfg.skip_invalid, skips=loaded.skips,
    )
    if not features:
        raise ValueError(f"{cfg.dataset_name}: no rows left to train on.\n{loaded.skips.summary()}")
    report = {"rows_read": len(loaded.records) + loaded.skips.total, "format": loaded.fmt, "skipped": loaded.skips.as_dict()}
    if loaded.skips.total:
        log.warning("%s", loaded.skips.summary())
    # Weights are fixed here, over the whole dataset, before any shuffling or sharding.
    by_row = {r["rdo_row"]: r for r in loaded.records}
    reward_diffs = [by_row[f["rdo_row"]][cfg.coef_column] if cfg.uses_coefficients else 0.0 for f in features]
    weights, keep, stats = cfg.policy.weights(reward_diffs)
    for f, w in zip(features, weights.tolist()):
        f["rdo_weight"] = w
    features = [f for f, k in zip(features, keep.tolist()) if k]
    report["coefficients"] = stats
    report["rows_trained"] = len(features)
    log.info("%s", format_stats(stats))
    return features, report


def align(cfg: AlignConfig) -> dict:
    """Train the policy in `cfg` and save it to `cfg.output_dir`; returns the metrics written there."""
    from datasets import Dataset

    from rdo.trainer import RDOTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_seed(cfg.seed)
    method = get_method(cfg.method)
    tokenizer = load_tokenizer(cfg.model_name_or_path)
    collator = method.make_collator(tokenizer.pad_token_id, cfg.pad_to_multiple_of)

    features, report = prepare_features(cfg, method, tokenizer)
    model = load_causal_lm(cfg.model_name_or_path, cfg.torch_dtype)

    ref_model = None
    if method.needs_reference and cfg.precompute_ref:
        ref_id = cfg.ref_model_name_or_path or cfg.model_name_or_path
        path = cache_path(Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else default_cache_dir(cfg.dataset_name),
                          f"{ref_id}|{cfg.torch_dtype}", method.ref_columns, features)
        model_fn = (lambda: load_causal_lm(ref_id, cfg.torch_dtype).to(cfg.device)) if cfg.ref_model_name_or_path else (lambda: model.to(cfg.device))
        with cfg.main_process_first(desc="reference log-probs"):  # rank 0 computes and caches; the others read
            values = load_or_compute(path, model_fn, features, collator, method.ref_step,
                                     cfg.per_device_eval_batch_size, cfg.device)
        for col, vals in values.items():
            for f, v in zip(features, vals):
                f[col] = v
        report["reference_cache"] = str(path)

    if cfg.lora_r > 0:
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    elif method.needs_reference and not cfg.precompute_ref:
        ref_model = load_causal_lm(cfg.ref_model_name_or_path, cfg.torch_dtype) if cfg.ref_model_name_or_path else copy.deepcopy(model)
        ref_model.requires_grad_(False).eval()

    trainer = RDOTrainer(
        model=model, args=cfg, data_collator=collator, train_dataset=Dataset.from_list(features),
        processing_class=tokenizer, method=method, ref_model=ref_model,
    )
    result = trainer.train()
    return save_outputs(cfg, trainer, tokenizer, report, result.metrics)


def save_outputs(cfg: AlignConfig, trainer, tokenizer, report: dict, train_metrics: dict) -> dict:
    """A normal `save_pretrained` folder (LoRA merged; the adapter kept in adapter/), config and metrics."""
    out = Path(cfg.output_dir)
    metrics = {"train": train_metrics, "data": report, "log_history": trainer.state.log_history}
    if not trainer.is_world_process_zero():
        return metrics
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "rdo_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics
