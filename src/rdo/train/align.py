"""`rdo align`: preference optimisation where each pair's loss is weighted by its coefficient."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from transformers import set_seed

from rdo.core.coefficients import CoefficientPolicy, format_stats, ranked_weights
from rdo.config import AlignConfig
from rdo.data import DataError, load_records
from rdo.data.convert import convert_records, row_key
from rdo.data.tokenize import Encoder, encode_records
from rdo.core.methods import Method, get_method
from rdo.models import add_lora, disable_dropout, load_causal_lm, load_tokenizer, save_trained
from rdo.train.reference import default_cache_dir, full_key, load_or_compute
from rdo.train.trainer import training_autocast
from rdo.train.resume import check_config, check_rows, find_checkpoint, reference_values, restore_reference, rows_state
from rdo.utils.content import config_content

log = logging.getLogger("rdo.train.align")


def prepare_features(
    cfg: AlignConfig, method: Method, tokenizer, *, source: str | None = None, split: str | None = None, weighted: bool = True
) -> tuple[list[dict], dict]:
    """Load, validate and tokenise the data, then attach each unit's weight. Returns (features, report).

    Pairs are converted first when the method trains on another kind (RRHF: ranked, KTO: unpaired).
    A method that reads R in its loss (ODPO, MMPO, RPO) gets each pair's raw R as `reward_diff`,
    held-out data included, whatever α is.
    """
    source, split = source or cfg.dataset_name, split or cfg.dataset_split
    policy = cfg.policy if weighted else CoefficientPolicy(alpha=0.0)  # held-out data is evaluated unweighted
    coef_column = cfg.coef_column if policy.alpha != 0 or method.reads_reward_diff else None
    loaded = load_records(
        source, split=split, tokenizer=tokenizer, coef_column=coef_column,
        score_columns=cfg.score_columns if coef_column else None, skip_invalid=cfg.skip_invalid, dedupe_ids=cfg.dedupe_ids,
    )
    if loaded.kind not in method.data_kinds:
        raise ValueError(
            f"{source}: {loaded.fmt} rows ({loaded.kind}) cannot train --method {method.name}, "
            f"which needs {' or '.join(method.data_kinds)} rows"
        )
    records = convert_records(loaded.records, loaded.kind, method.data_kind, coef_column)
    features = encode_records(
        records, Encoder(tokenizer, cfg.truncation), method.data_kind, source,
        skip_invalid=cfg.skip_invalid, skips=loaded.skips,
    )
    if not features:
        raise ValueError(f"{source}: no rows left to train on.\n{loaded.skips.summary()}")
    report = {"rows_read": len(loaded.records) + loaded.skips.total, "format": loaded.fmt, "skipped": loaded.skips.as_dict()}
    if loaded.kind != method.data_kind:
        report["converted"] = f"{loaded.kind} -> {method.data_kind}"
    if loaded.skips.total:
        log.warning("%s", loaded.skips.summary())
    # Weights are fixed here, over the whole dataset, before any shuffling or sharding.
    by_key = {row_key(r): r for r in records}
    sources = [by_key[row_key(f)] for f in features]
    if method.data_kind == "ranked":
        weights, keep, stats = _ranked_weights(source, policy, sources, coef_column)
    else:
        reward_diffs = [r[coef_column] for r in sources] if coef_column else None
        weights, keep, stats = policy.weights(reward_diffs, n=len(sources))
        weights, keep = weights.tolist(), keep.tolist()
    for f, w, src in zip(features, weights, sources):
        f["rdo_weight"] = w
        if method.reads_reward_diff:
            f["reward_diff"] = float(src[coef_column])
    features = [f for f, k in zip(features, keep) if k]
    if method.prepare is not None:
        features = method.prepare(features, cfg)
    report["coefficients"] = stats
    if cfg.score_columns and coef_column:
        report["reward_diff_source"] = f"{cfg.score_columns[0]} - {cfg.score_columns[1]}"
    report["rows_trained"] = len(features)
    log.info("%s", format_stats(stats))
    return features, report


def _ranked_weights(source: str, policy: CoefficientPolicy, records: list[dict], coef_column: str | None):
    """Per-row K x K pair weights: from the coefficient column when rows carry it, else from the scores."""
    has = [coef_column is not None and coef_column in r for r in records]
    if any(has) and not all(has):
        r = records[has.index(False)]
        raise DataError(
            source, r["rdo_row"], coef_column,
            "missing here but present on other rows; R must come from one source for the whole dataset",
            "Add it to every row, or drop the column so R is taken from the scores",
        )
    if coef_column is not None and not any(has):
        log.warning("coefficients: the ranked rows have no %r column, so R_ij = scores[j] - scores[i] (ranked rows only: "
                    "pairs and unpaired rows without it are an error; see --coef_column)", coef_column)
    diffs = [r[coef_column] if h else None for r, h in zip(records, has)]
    weights, keep, stats = ranked_weights(policy, [r["scores"] for r in records], diffs)
    stats["unit"] = "ranked pair"
    stats["source"] = coef_column if any(has) else "scores"
    return weights, keep, stats


def align(cfg: AlignConfig) -> dict:
    """Train the policy in `cfg` and save it to `cfg.output_dir`; returns the metrics written there."""
    from datasets import Dataset

    from rdo.train.trainer import RDOTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_seed(cfg.seed)
    checkpoint = find_checkpoint(cfg)
    if checkpoint:
        check_config(checkpoint, cfg)
    method = get_method(cfg.method)
    tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code, cfg.model_revision)
    collator = method.make_collator(tokenizer.pad_token_id, cfg.pad_to_multiple_of, cfg.prefix_sharing, cfg.padding_free)

    features, report = prepare_features(cfg, method, tokenizer)
    precomputed = method.needs_reference and cfg.precompute_ref
    base_key = reference_key(cfg, method, tokenizer) if precomputed else None  # fingerprints, computed once
    ref_key = full_key(base_key, features) if precomputed else None
    state = rows_state(features, config_content(cfg, kinds=("model",)), ref_key)
    if checkpoint:
        check_rows(checkpoint, state)  # a changed model, row or reference key is refused, never restored
    # The model's initial weights: the reference below is computed from (or copied off) these, before
    # train() loads a checkpoint's weights, so a resumed run never takes a half-trained policy as reference.
    model = load_model(cfg, cfg.model_name_or_path, cfg.model_revision)

    eval_features = None
    if cfg.eval_dataset_name:
        eval_features, report["eval_data"] = prepare_features(
            cfg, method, tokenizer, source=cfg.eval_dataset_name, split=cfg.eval_dataset_split, weighted=False)
    if precomputed:
        if checkpoint and restore_reference(checkpoint, features, method.ref_columns, ref_key):
            report["reference_cache"] = checkpoint
        else:
            report["reference_cache"] = attach_reference(cfg, method, features, model, collator, cfg.dataset_name, base_key)
        if eval_features:
            attach_reference(cfg, method, eval_features, model, collator, cfg.eval_dataset_name, base_key)

    ref_model = None  # a live reference: --ref_model_name_or_path, else a copy of the policy (LoRA: the adapter-disabled base)
    if method.needs_reference and not cfg.precompute_ref:
        if cfg.ref_model_name_or_path:
            ref_model = load_model(cfg, cfg.ref_model_name_or_path, cfg.ref_model_revision)
        elif cfg.lora_r == 0:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
    if cfg.lora_r > 0:
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)

    trainer = RDOTrainer(
        model=model, args=cfg, data_collator=collator, train_dataset=Dataset.from_list(features),
        eval_dataset=Dataset.from_list(eval_features) if eval_features else None,
        processing_class=tokenizer, method=method, ref_model=ref_model,
    )
    if precomputed:
        state["reference"] = reference_values(features, method.ref_columns)
    trainer.rows_state = state
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if eval_features:
        report["eval"] = trainer.evaluate()
    return save_outputs(cfg, trainer, tokenizer, report, result.metrics)


def reference_key(cfg: AlignConfig, method: Method, tokenizer) -> dict:
    """The content the reference log-probs depend on, before the token ids (rdo.train.reference.full_key adds
    them): the reference's weights and config, the tokenizer that made the ids (with its chat template),
    truncation, dtype, precision, the method and its columns."""
    from rdo.utils.fingerprint import tokenizer_fingerprint

    ref_field = "ref_model_name_or_path" if cfg.ref_model_name_or_path else "model_name_or_path"
    return {
        "reference": config_content(cfg, kinds=("model",))[ref_field],  # a hub id by the commit its revision resolves to
        "tokenizer": tokenizer_fingerprint(tokenizer),  # the one that encoded the features
        "truncation": [cfg.max_length, cfg.max_prompt_length],
        "torch_dtype": cfg.torch_dtype,
        "precision": "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "fp32",  # the training steps' autocast
        "method": method.name,
        "columns": list(method.ref_columns),
    }


def attach_reference(cfg: AlignConfig, method: Method, features: list[dict], model, collator, source: str, key: dict) -> str:
    """Add the method's reference columns to `features`, from the cache or computed once; returns the cache path.

    `key` is `reference_key`; the cache adds the token ids themselves (rdo.train.reference).
    """
    ref_id = cfg.ref_model_name_or_path or cfg.model_name_or_path
    ref_revision = cfg.ref_model_revision if cfg.ref_model_name_or_path else cfg.model_revision
    cache_dir = Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else default_cache_dir(source)
    if cfg.ref_model_name_or_path:
        model_fn = lambda: load_model(cfg, ref_id, ref_revision).to(cfg.device)  # noqa: E731
    else:
        model_fn = lambda: model.to(cfg.device)  # noqa: E731  (the policy before training is the reference)
    # every process computes its share of the rows (rdo.train.reference.compute_reference_sharded); the main one caches
    values, path = load_or_compute(cache_dir, key, {"reference": ref_id, "data": source},
                                   model_fn, features, collator, method.ref_step, cfg.per_device_eval_batch_size,
                                   cfg.device, autocast=lambda: training_autocast(cfg))
    for col, vals in values.items():
        for f, v in zip(features, vals):
            f[col] = v
    return str(path)


def load_model(cfg: AlignConfig, name_or_path: str, revision: str | None = None):
    """Policy or reference, with its dropout off under --disable_dropout (the default), so that the policy's
    train-mode log-probs equal the reference's at step 0 and the log-ratios carry no dropout noise."""
    model = load_causal_lm(name_or_path, cfg.torch_dtype, cfg.trust_remote_code, revision, cfg.attn_implementation)
    if cfg.disable_dropout and (n := disable_dropout(model)):
        log.info("%s: turned off %d dropout(s) (--disable_dropout)", name_or_path, n)
    return model


def save_outputs(cfg: AlignConfig, trainer, tokenizer, report: dict, train_metrics: dict) -> dict:
    """A normal `save_pretrained` folder (LoRA merged; the adapter kept in adapter/), config and metrics."""
    metrics = {"train": train_metrics, "data": report, "log_history": trainer.state.log_history}
    save_trained(trainer, tokenizer, cfg, metrics)
    return metrics
