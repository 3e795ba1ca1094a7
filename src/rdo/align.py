"""`rdo align`: preference optimisation where each pair's loss is weighted by its coefficient."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from transformers import set_seed

from rdo.coefficients import format_stats, ranked_weights
from rdo.config import AlignConfig
from rdo.data import DataError, load_records
from rdo.data.convert import convert_records, row_key
from rdo.data.tokenize import Encoder, encode_records
from rdo.methods import Method, get_method
from rdo.models import add_lora, load_causal_lm, load_tokenizer
from rdo.reference import cache_path, default_cache_dir, load_or_compute

log = logging.getLogger("rdo.align")


def prepare_features(cfg: AlignConfig, method: Method, tokenizer) -> tuple[list[dict], dict]:
    """Load, validate and tokenise the data, then attach each unit's weight. Returns (features, report).

    Pairs are converted first when the method trains on another kind (RRHF: ranked, KTO: unpaired).
    """
    coef_column = cfg.coef_column if cfg.uses_coefficients else None
    loaded = load_records(
        cfg.dataset_name, split=cfg.dataset_split, tokenizer=tokenizer,
        coef_column=coef_column, skip_invalid=cfg.skip_invalid,
    )
    if loaded.kind not in method.data_kinds:
        raise ValueError(
            f"{cfg.dataset_name}: {loaded.fmt} rows ({loaded.kind}) cannot train --method {method.name}, "
            f"which needs {' or '.join(method.data_kinds)} rows"
        )
    records = convert_records(loaded.records, loaded.kind, method.data_kind, coef_column)
    features = encode_records(
        records, Encoder(tokenizer, cfg.truncation), method.data_kind, cfg.dataset_name,
        skip_invalid=cfg.skip_invalid, skips=loaded.skips,
    )
    if not features:
        raise ValueError(f"{cfg.dataset_name}: no rows left to train on.\n{loaded.skips.summary()}")
    report = {"rows_read": len(loaded.records) + loaded.skips.total, "format": loaded.fmt, "skipped": loaded.skips.as_dict()}
    if loaded.kind != method.data_kind:
        report["converted"] = f"{loaded.kind} -> {method.data_kind}"
    if loaded.skips.total:
        log.warning("%s", loaded.skips.summary())
    # Weights are fixed here, over the whole dataset, before any shuffling or sharding.
    by_key = {row_key(r): r for r in records}
    sources = [by_key[row_key(f)] for f in features]
    if method.data_kind == "ranked":
        weights, keep, stats = _ranked_weights(cfg, sources, coef_column)
    else:
        reward_diffs = [r[coef_column] if coef_column else 0.0 for r in sources]
        weights, keep, stats = cfg.policy.weights(reward_diffs)
        weights, keep = weights.tolist(), keep.tolist()
    for f, w in zip(features, weights):
        f["rdo_weight"] = w
    features = [f for f, k in zip(features, keep) if k]
    if method.prepare is not None:
        features = method.prepare(features, cfg)
    report["coefficients"] = stats
    report["rows_trained"] = len(features)
    log.info("%s", format_stats(stats))
    return features, report


def _ranked_weights(cfg: AlignConfig, records: list[dict], coef_column: str | None):
    """Per-row K x K pair weights: from the coefficient column when rows carry it, else from the scores."""
    has = [coef_column is not None and coef_column in r for r in records]
    if any(has) and not all(has):
        r = records[has.index(False)]
        raise DataError(
            cfg.dataset_name, r["rdo_row"], coef_column,
            "missing here but present on other rows; R must come from one source for the whole dataset",
            "Add it to every row, or drop the column so R is taken from the scores",
        )
    if coef_column is not None and not any(has):
        log.info("coefficients: no %r column on the ranked rows; R_ij = scores[j] - scores[i]", coef_column)
    diffs = [r[coef_column] if h else None for r, h in zip(records, has)]
    weights, keep, stats = ranked_weights(cfg.policy, [r["scores"] for r in records], diffs)
    stats["unit"] = "ranked pair"
    stats["source"] = coef_column if any(has) else "scores"
    return weights, keep, stats


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
