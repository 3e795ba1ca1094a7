"""`rdo train-rm` and `rdo train-diff`: the two scorers, trained by one small Trainer subclass.

- reward model (Eq. 3): chosen and rejected in one concatenated forward of 2B rows,
  loss -log σ(r_w - r_l - margin), margin optional per row.
- difference model (Eqs. 4-6): each pair is shown in a random order, so both labels occur
  (label 1 when y1 is the preferred response); the three sequences (y1, y2), (y2, y1) and
  (y_i, y_i) with y_i one response picked at random go through one forward of 3B rows; loss
  BCE(σ(f_12), label) + β0 f_dup² + β1 (f_12 + f_21)².

Ranked rows are expanded into every pair of responses with different scores. The backbone and
the new head get separate learning rates (the paper: 1e-5 and 1e-4).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

import torch
from transformers import set_seed

from rdo.core import losses as L
from rdo.config import TrainDiffConfig, TrainRMConfig
from rdo.data import DataError, load_records
from rdo.data.collate import grouped_batch, pad_sequences
from rdo.data.errors import SKIP_HINT
from rdo.data.tokenize import Encoder
from rdo.models import save_trained
from rdo.data.formats import CHAT_KEY
from rdo.score.scorers import (DifferenceEncoder, ScorerSpec, build_scorer_model, decoder_layers, head_modules, head_parameter_names,
                               pool_weights, resolve_template, response_span, scores_of, keep_bottom_layers, train_only_top, use_scorer_pad)
from rdo.train.trainer import MetricsTrainer

log = logging.getLogger("rdo.score.training")


# --- data --------------------------------------------------------------------------------------

def as_pairs(records: list[dict], kind: str, source: str) -> list[dict]:
    """Pair records as they are; ranked records -> every (better, worse) pair of responses."""
    if kind == "pair":
        return records
    if kind != "ranked":
        raise ValueError(f"{source}: {kind} rows have no preference pairs to train a scorer on; use pairs or ranked rows")
    out = []
    for r in records:
        for yi, si in zip(r["responses"], r["scores"]):
            for yj, sj in zip(r["responses"], r["scores"]):
                if si > sj:
                    out.append({**r, "chosen": yi, "rejected": yj})
    return out


def reward_features(pairs: list[dict], tokenizer, cfg: TrainRMConfig, source: str, skips) -> list[dict]:
    """Encoded pairs (the `rdo align` truncation rule) plus each row's margin when the data has one."""
    encoder = Encoder(tokenizer, cfg.truncation)
    use_margin = cfg.margin_column in pairs[0]
    out = []
    for rec in pairs:
        try:
            f = encoder.encode(rec, "pair", source)
            if use_margin:
                m = rec.get(cfg.margin_column)
                if isinstance(m, bool) or not isinstance(m, (int, float)):
                    raise DataError(source, rec["rdo_row"], cfg.margin_column, f"expected a number (the first row has a margin), got {m!r}", SKIP_HINT)
                f["margin"] = float(m)
        except DataError as err:
            if not cfg.skip_invalid:
                raise
            skips.add(err)
            continue
        out.append(f)
    return out


def difference_features(pairs: list[dict], encoder: DifferenceEncoder, source: str = "data") -> list[dict]:
    """Token ids of the query and both responses (assembled per batch, in a random order); cuts are logged."""
    xs, ys = encoder.query_and_responses(
        [r["prompt"] for r in pairs], [[r["chosen"], r["rejected"]] for r in pairs], [bool(r.get(CHAT_KEY)) for r in pairs])
    out = [
        {"x_ids": x, "chosen_ids": c, "rejected_ids": r, "rdo_row": rec["rdo_row"],
         "length": len(encoder.assemble(x, c, r, where=(source, rec["rdo_row"])))}
        for rec, x, (c, r) in zip(pairs, xs, ys)
    ]
    if encoder.base.cuts.prompts or encoder.base.cuts.responses:
        log.warning("%s: %s", source, encoder.base.cuts.summary())
    return out


class RewardCollator:
    """Rows [0, B) prompt+chosen, rows [B, 2B) prompt+rejected: one concatenated forward; or prefix-shared /
    padding-free rows (rdo.data.collate.grouped_batch) whose scores come back in the same (2B,) order;
    `pooling` mean: padded rows plus `pool_weights` (2B, T) over each response's tokens."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int = 1, prefix_sharing: bool = False, padding_free: bool = False,
                 pooling: str = "last"):
        self.pad_id, self.multiple_of, self.pooling = pad_id, pad_to_multiple_of, pooling
        self.prefix_sharing, self.padding_free = prefix_sharing, padding_free

    @staticmethod
    def sequences(features: list[dict]) -> list[list[int]]:
        """Every sequence a batch of these features can hold (for --cache_frozen)."""
        return [f["prompt_ids"] + f[k] for f in features for k in ("chosen_ids", "rejected_ids")]

    def __call__(self, features: list[dict]) -> dict:
        if self.prefix_sharing or self.padding_free:
            n = len(features)
            batch = grouped_batch([f["prompt_ids"] for f in features], [[f["chosen_ids"], f["rejected_ids"]] for f in features],
                                  [[b, n + b] for b in range(n)], self.pad_id, self.multiple_of,
                                  self.prefix_sharing, self.padding_free)
        else:
            seqs = [f["prompt_ids"] + f["chosen_ids"] for f in features] + [f["prompt_ids"] + f["rejected_ids"] for f in features]
            ids, mask = pad_sequences(seqs, self.pad_id, self.multiple_of)  # (2B, T)
            batch = {"input_ids": ids, "attention_mask": mask}
            if self.pooling == "mean":
                spans = [response_span(len(f["prompt_ids"]), len(f[k])) for k in ("chosen_ids", "rejected_ids") for f in features]
                batch["pool_weights"] = pool_weights(spans, mask)  # (2B, T)
        batch["rdo_row"] = torch.tensor([f["rdo_row"] for f in features])
        if "margin" in features[0]:
            batch["margin"] = torch.tensor([f["margin"] for f in features], dtype=torch.float32)  # (B,)
        return batch


class DifferenceCollator:
    """Rows [0, B) (y1, y2), [B, 2B) (y2, y1), [2B, 3B) (y_i, y_i): one forward of 3B rows.

    Each pair is presented in a random order (label 1 when y1 is the chosen response, else 0), and
    the duplication term uses one of its two responses at random (Sec. 3.2). `pooling` mean: plus
    `pool_weights` (3B, T), y1's mean minus y2's.
    """

    def __init__(self, encoder: DifferenceEncoder, pad_id: int, pad_to_multiple_of: int = 1, seed: int = 0, pooling: str = "last"):
        self.enc, self.pad_id, self.multiple_of, self.pooling = encoder, pad_id, pad_to_multiple_of, pooling
        self.rng = random.Random(seed)
        self.calls = 0
        self._before: dict[int, tuple] = {}  # call index -> the generator's state before it (the last few)

    def sequences(self, features: list[dict]) -> list[list[int]]:
        """Every sequence a batch can hold, whatever the draws: both orders and both duplicates (for --cache_frozen)."""
        return [self.enc.assemble(f["x_ids"], f[a], f[b]) for f in features
                for a, b in (("chosen_ids", "rejected_ids"), ("rejected_ids", "chosen_ids"),
                             ("chosen_ids", "chosen_ids"), ("rejected_ids", "rejected_ids"))]

    def state_before(self, call: int):
        """The generator's state before batch number `call` (for a checkpoint: the first batch not yet trained)."""
        return self.rng.getstate() if call >= self.calls else self._before[call]

    def restore(self, call: int, state) -> None:
        self.rng.setstate(state)
        self.calls, self._before = call, {}

    def __call__(self, features: list[dict]) -> dict:
        if hasattr(self.rng, "getstate"):  # the loader runs a batch ahead of training: keep states to checkpoint
            self._before[self.calls] = self.rng.getstate()
            self._before.pop(self.calls - 64, None)
        self.calls += 1
        forward, reverse, dup, labels = [], [], [], []
        for f in features:
            swap = self.rng.random() < 0.5
            y1, y2 = (f["rejected_ids"], f["chosen_ids"]) if swap else (f["chosen_ids"], f["rejected_ids"])
            yi = y1 if self.rng.random() < 0.5 else y2
            forward.append(self.enc.assemble_pooled(f["x_ids"], y1, y2))
            reverse.append(self.enc.assemble_pooled(f["x_ids"], y2, y1))
            dup.append(self.enc.assemble_pooled(f["x_ids"], yi, yi))
            labels.append(0.0 if swap else 1.0)
        seqs = forward + reverse + dup  # (ids, spans) each
        ids, mask = pad_sequences([s for s, _ in seqs], self.pad_id, self.multiple_of)  # (3B, T)
        batch = {
            "input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor(labels, dtype=torch.float32),  # (B,)
            "rdo_row": torch.tensor([f["rdo_row"] for f in features]),
        }
        if self.pooling == "mean":
            batch["pool_weights"] = pool_weights([spans for _, spans in seqs], mask)  # (3B, T)
        return batch


# --- losses on model outputs -------------------------------------------------------------------

def reward_step(args, model, batch) -> tuple[torch.Tensor, dict]:
    chosen, rejected = scores_of(model, batch).chunk(2)  # (B,), (B,)
    losses = L.bt_loss(chosen, rejected, batch.get("margin"))  # (B,)  Eq. (3)
    chosen, rejected = chosen.detach(), rejected.detach()
    return losses, {
        "rewards/chosen": chosen, "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected, "rewards/accuracies": (chosen > rejected).float(),
    }


def difference_step(args, model, batch) -> tuple[torch.Tensor, dict]:
    f_12, f_21, f_dup = scores_of(model, batch).chunk(3)  # (B,) each
    labels = batch["labels"]
    losses, bce, dup, rev = L.difference_loss(f_12, f_21, f_dup, labels, args.beta0, args.beta1)  # (B,)  Eq. (6)
    f_12, f_21 = f_12.detach(), f_21.detach()
    return losses, {
        "loss/bce": bce, "loss/dup": dup, "loss/rev": rev,
        "diff/accuracies": ((f_12 > 0).float() == labels).float(),
        "diff/consistency": ((f_12 > 0) != (f_21 > 0)).float(),
        "diff/abs_f": f_12.abs(),
    }


# --- trainer -----------------------------------------------------------------------------------

def _is_factory(optimizer_cls) -> bool:
    try:
        from transformers.trainer_optimizer import is_optimizer_factory
    except ImportError:  # older transformers: no optimiser factories
        return False
    return is_optimizer_factory(optimizer_cls)


class ScorerTrainer(MetricsTrainer):
    """Trains a reward or difference model: `step` gives per-pair losses, reduced here by a plain mean.

    The score head is found once, here, before any engine wraps the model: FSDP / DeepSpeed rename
    parameters (`_fsdp_wrapped_module.…`) and FSDP2 replaces them, so `create_optimizer` selects the
    head's parameters through the head *modules*, which keep their identity, never by name.
    """

    def __init__(self, *args, step, frozen_lower_layers: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = step
        self.head_modules = head_modules(self.model)
        self.frozen_lower_layers = frozen_lower_layers  # --freeze_backbone / --train_top_layers
        self._batches_trained = 0

    # --- the difference collator's random draws, checkpointed so a resumed run draws the same ---

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.frozen_lower_layers and self.args.activation_checkpointing:
            self._stop_backward_at_trained_layers()
        self._batches_trained += 1
        return super().training_step(model, inputs, num_items_in_batch)

    def _stop_backward_at_trained_layers(self) -> None:
        """With --gradient_checkpointing, transformers makes the embeddings' output require grad (reentrant
        checkpointing and frozen-embedding LoRA need it), and the backward pass then runs through every frozen
        layer. Non-reentrant checkpointing (its default) gets the trained layers' gradients without it, so the
        hook goes and backward stops at the first trained layer again (tests/test_frozen_cache.py counts it)."""
        if (self.args.activation_checkpointing_kwargs or {}).get("use_reentrant", False):
            return  # reentrant: a checkpointed trained layer whose input needs no grad would get no gradient
        self.model.disable_input_require_grads()  # idempotent: no hooks, nothing to remove

    def get_eval_dataloader(self, eval_dataset=None):
        """Evaluation gets its own difference collator: its draws never shift the training batches' ones."""
        train_collator = self.data_collator
        if isinstance(train_collator, DifferenceCollator):
            self.data_collator = DifferenceCollator(train_collator.enc, train_collator.pad_id, train_collator.multiple_of, self.args.seed,
                                                    train_collator.pooling)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def checkpoint_state(self) -> dict:
        if not isinstance(self.data_collator, DifferenceCollator):
            return {}
        n = self._batches_trained  # a resumed run's loader skips these without collating them
        version, internal, gauss = self.data_collator.state_before(n)
        return {"collator": {"batches": n, "rng": [version, list(internal), gauss]}}

    def restore_collator(self, checkpoint: str) -> None:
        from rdo.train.resume import load_checkpoint_state

        saved = load_checkpoint_state(checkpoint).get("collator")
        if saved is None:
            if isinstance(self.data_collator, DifferenceCollator):
                log.warning("%s holds no collator state: the resumed pair orders will differ from the uninterrupted run's", checkpoint)
            return
        version, internal, gauss = saved["rng"]
        self.data_collator.restore(saved["batches"], (version, tuple(internal), gauss))
        self._batches_trained = saved["batches"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses, metrics = self.step(self.args, model, inputs)
        self.record_metrics(model, metrics)
        loss = losses.mean()
        return (loss, {}) if return_outputs else loss

    def create_optimizer(self, model=None):
        """The usual decay / no-decay groups, each split into backbone (--learning_rate) and head (--head_learning_rate)."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        head = {id(p) for m in self.head_modules for p in m.parameters()}  # the parameters the head modules hold now
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, p in opt_model.named_parameters():
            if p.requires_grad:
                groups[(id(p) in head, name in decay)].append(p)
        if not any(is_head for is_head, _ in groups):  # (all head is right: --freeze_backbone)
            raise RuntimeError(
                "could not tell the score head's parameters from the backbone's in the wrapped model "
                f"({sum(map(len, groups.values()))} trainable tensors); --head_learning_rate needs the original parameters "
                "(FSDP: use_orig_params=True, or FSDP2)"
            )
        param_groups = [
            {"params": ps, "lr": self.args.head_learning_rate if is_head else self.args.learning_rate,
             "weight_decay": self.args.weight_decay if decays else 0.0}
            for (is_head, decays), ps in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if _is_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
            # optimisers that build their own parameter groups (Muon, GaLore, LOMO, layer-wise): one rate for all
            log.warning("--optim %s sets its own parameter groups; --head_learning_rate is not applied", self.args.optim)
            return super().create_optimizer(model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


# --- commands ----------------------------------------------------------------------------------

def train_rm(cfg: TrainRMConfig) -> dict:
    """`rdo train-rm`: train a Bradley-Terry reward model and save it with rdo.json."""
    return _train(cfg, "reward")


def train_diff(cfg: TrainDiffConfig) -> dict:
    """`rdo train-diff`: train a reward difference model (Eqs. 4-6) and save it with rdo.json."""
    return _train(cfg, "difference")


def _features(cfg, kind: str, tokenizer, source: str, split: str, diff_encoder) -> tuple[list[dict], dict]:
    loaded = load_records(source, split=split, tokenizer=tokenizer, skip_invalid=cfg.skip_invalid, dedupe_ids=cfg.dedupe_ids)
    pairs = as_pairs(loaded.records, loaded.kind, source)
    if kind == "reward":
        features = reward_features(pairs, tokenizer, cfg, source, loaded.skips)
    else:
        features = difference_features(pairs, diff_encoder, source)
    if not features:
        raise ValueError(f"{source}: no pairs left to train on.\n{loaded.skips.summary()}")
    if loaded.skips.total:
        log.warning("%s", loaded.skips.summary())
    return features, {"rows_read": len(loaded.records) + loaded.skips.total, "format": loaded.fmt,
                      "pairs": len(features), "skipped": loaded.skips.as_dict()}


def _train(cfg, kind: str) -> dict:
    from datasets import Dataset

    from rdo.models import add_lora, disable_dropout, load_tokenizer

    from rdo.train.resume import check_config, check_rows, find_checkpoint, rows_state
    from rdo.utils.content import config_content

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_seed(cfg.seed)
    checkpoint = find_checkpoint(cfg)
    if checkpoint:
        check_config(checkpoint, cfg)
    tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code, cfg.model_revision)
    use_scorer_pad(tokenizer)  # the head must read each row's last real token, not the one before EOS
    template = resolve_template(cfg.template, tokenizer) if kind == "difference" else None
    diff_encoder = DifferenceEncoder(tokenizer, template, cfg.truncation) if kind == "difference" else None
    features, report = _features(cfg, kind, tokenizer, cfg.dataset_name, cfg.dataset_split, diff_encoder)
    state = rows_state(features, config_content(cfg, kinds=("model",)))
    if checkpoint:
        check_rows(checkpoint, state)  # a changed base model or training row is refused, never resumed over
    eval_features = None
    if cfg.eval_dataset_name:
        eval_features, report["eval"] = _features(cfg, kind, tokenizer, cfg.eval_dataset_name, cfg.eval_dataset_split, diff_encoder)

    model = build_scorer_model(cfg.model_name_or_path, tokenizer, cfg.torch_dtype, cfg.trust_remote_code,
                               cfg.model_revision, cfg.attn_implementation)
    if cfg.backbone_layers:
        total = keep_bottom_layers(model, cfg.backbone_layers)
        log.info("kept the first %d of %d layers under the head (--backbone_layers)", cfg.backbone_layers, total)
    if cfg.disable_dropout and (n := disable_dropout(model)):  # before LoRA: --lora_dropout is kept
        log.info("%s: turned off %d dropout(s) (--disable_dropout)", cfg.model_name_or_path, n)
    if cfg.freeze_backbone:  # a linear probe: only the head learns, so no backward runs through the LM
        head = head_parameter_names(model)
        for name, p in model.named_parameters():
            p.requires_grad_(name in head)
    if cfg.train_top_layers:
        n, total = train_only_top(model, cfg.train_top_layers)
        log.info("training the head and the top %d of %d layers (--train_top_layers)", n, total)
    if cfg.lora_r > 0:  # SEQ_CLS keeps the new head fully trainable (modules_to_save)
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules, task_type="SEQ_CLS")
    if kind == "reward":
        # --cache_frozen replays the frozen layers per padded sequence, and --pooling mean weights padded rows:
        # both keep padded rows
        share = not cfg.cache_frozen and cfg.pooling == "last"
        if not share and (cfg.prefix_sharing or cfg.padding_free):
            log.info("--cache_frozen / --pooling mean train on padded rows: training without --prefix_sharing / --padding_free")
        collator = RewardCollator(tokenizer.pad_token_id, cfg.pad_to_multiple_of, cfg.prefix_sharing and share,
                                  cfg.padding_free and share, cfg.pooling)
        step = reward_step
    else:
        collator = DifferenceCollator(diff_encoder, tokenizer.pad_token_id, cfg.pad_to_multiple_of, cfg.seed, cfg.pooling)
        step = difference_step

    cache = frozen_cache(cfg, model, collator, features + (eval_features or []), tokenizer.pad_token_id)
    trainer = ScorerTrainer(
        model=model, args=cfg, data_collator=collator, train_dataset=Dataset.from_list(features),
        eval_dataset=Dataset.from_list(eval_features) if eval_features else None, processing_class=tokenizer, step=step,
        frozen_lower_layers=bool(cfg.freeze_backbone or cfg.train_top_layers),
    )
    trainer.rows_state = state
    if checkpoint:
        trainer.restore_collator(checkpoint)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = {"train": result.metrics, "data": report}
        if eval_features:
            metrics["eval"] = trainer.evaluate()
    finally:
        if cache:
            cache.uninstall()
    spec = ScorerSpec(kind, cfg.max_length, cfg.max_prompt_length, template, cfg.model_name_or_path, cfg.pooling)
    return save_scorer(cfg, trainer, tokenizer, spec, metrics)


def frozen_cache(cfg, model, collator, features: list[dict], pad_id: int):
    """--cache_frozen: the frozen layers' output for every sequence, installed once it replays exactly; else None.

    Filled and checked in train mode, the mode the cached states stand in for (a module that behaves
    differently in training would otherwise be cached and checked in eval mode alike, and pass).
    The check asks for equality, in bf16 too: it recomputes its batch, so rounding cannot differ (measured
    0.0 in fp32 and bf16 on SmolLM2-135M, CPU) and a replay bug (wrong row, position or layer) is off by O(1).
    """
    if not cfg.cache_frozen:
        return None
    from rdo.train.trainer import training_autocast
    from rdo.score.frozen_cache import FrozenCache

    total = len(decoder_layers(model))
    model.to(cfg.device)
    cache = FrozenCache(model, total if cfg.freeze_backbone else total - cfg.train_top_layers, pad_id)
    autocast = lambda: training_autocast(cfg)  # noqa: E731  (the states the training steps would compute)
    sequences = collator.sequences(features)
    was_training = model.training
    model.train()
    try:
        cache.fill(sequences, cfg.per_device_eval_batch_size, autocast, progress=not cfg.disable_tqdm)
        error = cache.verify(sequences[: max(4, cfg.per_device_train_batch_size)], autocast)
    finally:
        model.train(was_training)
    if error != 0:
        log.warning("--cache_frozen: replayed outputs differ from the model's own forward by %.2g relative (must be 0): "
                    "training without the cache", error)
        return None
    log.info("--cache_frozen: replay checked against the model's own forward in train mode (equal)")
    cache.install()
    return cache


def save_scorer(cfg, trainer, tokenizer, spec: ScorerSpec, metrics: dict) -> dict:
    """An ordinary Hugging Face folder (LoRA merged; the adapter kept in adapter/) + rdo.json, config, metrics."""
    metrics["log_history"] = trainer.state.log_history

    def set_pad(model):  # the head finds each row's last token by the pad id
        model.config.pad_token_id = tokenizer.pad_token_id

    if save_trained(trainer, tokenizer, cfg, metrics, prepare=set_pad, extra=spec.save):  # rdo.json published with the model
        log.info("saved the %s model to %s", spec.kind, cfg.output_dir)
    return metrics
