"""`rdo align`'s config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import TrainingArguments

from rdo.core.losses import RPO_VARIANTS
from rdo.config.options import (
    BatchLayoutOptions, CoefficientOptions, DEFAULT_BETA, DatasetOptions, DtypeOptions, EvalDatasetOptions,
    LoraOptions, METHODS, ModelLoadOptions, ReliabilityArgs, TrainerDefaults, TruncationOptions, arg,
)


@dataclass
class AlignConfig(BatchLayoutOptions, TrainerDefaults, TruncationOptions, LoraOptions, ModelLoadOptions, DtypeOptions, EvalDatasetOptions, DatasetOptions, CoefficientOptions, ReliabilityArgs, TrainingArguments):
    """`rdo align`: offline preference optimisation (DPO/IPO/RRHF/KTO/SimPO/ODPO/MMPO/RPO) with reward difference coefficients."""

    model_name_or_path: str | None = arg(None, "Policy model: a local folder or a hub id.", content="model", revision="model_revision")
    method: str = arg("dpo", "Alignment loss: dpo/ipo/simpo train on pairs, rrhf on ranked rows (or pairs), kto on unpaired rows (or pairs); odpo (offset), mmpo (soft labels) and rpo (reward distillation) also read each pair's R inside the loss, at every α.", choices=list(METHODS))
    # --- method options: each method reads only its own (rdo.core.methods registry); others are refused ---
    beta: float | None = arg(None, "β: implicit-KL strength for DPO/IPO/KTO/ODPO/MMPO/RPO (default 0.1); reward scale for SimPO (default 2.0); not used by RRHF.")
    label_smoothing: float = arg(0.0, "Conservative DPO/SimPO: assumed fraction ε of flipped labels (0 = the plain loss).")
    ipo_average_log_ratios: bool = arg(True, "IPO: average log-ratios per token (TRL's convention) instead of summing.")
    simpo_gamma: float = arg(0.5, "SimPO: target reward margin γ, in reward units (after scaling by β).")
    rrhf_length_penalty: float = arg(1.0, "RRHF: a response's score is its summed log-prob / length^this (0 = summed).")
    rrhf_sft_weight: float = arg(1.0, "RRHF: weight of the SFT cross-entropy on each prompt's best-scored response.")
    kto_desirable_weight: float = arg(1.0, "KTO: λ_D, the loss weight of desirable examples.")
    kto_undesirable_weight: float = arg(1.0, "KTO: λ_U, the loss weight of undesirable examples.")
    odpo_offset_scale: float = arg(1.0, "ODPO: s in the offset Δ = s·log(1 + max(R, 0)) of -log σ(β·h - Δ); 0 = DPO exactly.")
    mmpo_gamma: float = arg(1.0, "MMPO: γ of the soft label p = σ(γ·R) in -[p log σ(βh) + (1-p) log σ(-βh)]; inf = label 1 when R > 0 (DPO exactly).")
    rpo_variant: str = arg("bwd_kl", "RPO: fit β·h to η·R by sq (squared distance), bwd_kl (KL(σ(ηR) || σ(βh)); η = inf is DPO) or fwd_kl (KL(σ(βh) || σ(ηR))).", choices=list(RPO_VARIANTS))
    rpo_eta: float = arg(1.0, "RPO: η, the scale of the explicit reward gap η·R (inf only with bwd_kl).")
    # --- reward difference coefficients (paper Eq. 2; α and the --coef_* policy come from CoefficientOptions) ---
    score_chosen_column: str | None = arg(None, "Take R = row[this] - row[--score_rejected_column] from the data's own scores (e.g. score_chosen of UltraFeedback rows) instead of --coef_column; pairs only.")
    score_rejected_column: str | None = arg(None, "The rejected response's score column; see --score_chosen_column.")
    coef_column: str = arg("rdo_reward_diff", "Column holding the raw reward difference R (written by `rdo score`). Pairs and unpaired rows must carry it when α > 0; ranked rows without it take R_ij = scores[j] - scores[i] (logged).")
    # --- reference model ---
    precompute_ref: bool = arg(True, "Compute reference log-probs once before training and cache them (the reference is then not held in memory).")
    ref_model_name_or_path: str | None = arg(None, "Reference model (precomputed or live, with or without LoRA); default: the policy's initial weights (with LoRA: the base, adapter disabled).", content="model", revision="ref_model_revision")
    ref_model_revision: str | None = arg(None, "Hub branch, tag or commit of --ref_model_name_or_path (default: main; --model_revision applies to the policy only).")
    ref_cache_dir: str | None = arg(None, "Where cached reference log-probs go (default: next to a local data file, else ~/.cache/rdo).", content="output")
    # --- Trainer defaults that differ from transformers' ---
    learning_rate: float = arg(1e-6, "Peak learning rate (DPO-scale default).")

    def __post_init__(self):
        if self.output_dir is None:
            raise ValueError("set --output_dir: where the trained model, config and metrics go")
        self.evaluate_each_epoch_when_given()
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("set --model_name_or_path to the policy model (a local folder or a hub id)")
        if not self.dataset_name:
            raise ValueError("set --dataset_name to a preference data file, a save_to_disk folder or a hub id")
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r}: choose one of {METHODS}")
        from rdo.core.methods import check_method_options

        check_method_options(self)  # an option the method does not read is an error, not silently ignored
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"--label_smoothing {self.label_smoothing} must be in [0, 0.5)")
        if self.beta is None:
            self.beta = DEFAULT_BETA.get(self.method)
        if self.beta is not None and self.beta <= 0:
            raise ValueError(f"--beta {self.beta} must be > 0")
        if self.rrhf_length_penalty < 0:
            raise ValueError(f"--rrhf_length_penalty {self.rrhf_length_penalty} must be >= 0 (0 ranks by summed log-probs)")
        if self.rrhf_sft_weight < 0:
            raise ValueError(f"--rrhf_sft_weight {self.rrhf_sft_weight} must be >= 0 (0 turns the SFT term off)")
        if self.kto_desirable_weight <= 0 or self.kto_undesirable_weight <= 0:
            raise ValueError("--kto_desirable_weight and --kto_undesirable_weight must be > 0")
        if not (math.isfinite(self.odpo_offset_scale) and self.odpo_offset_scale >= 0):
            raise ValueError(f"--odpo_offset_scale {self.odpo_offset_scale} must be a finite number >= 0 (0 = plain DPO)")
        if not self.mmpo_gamma > 0:
            raise ValueError(f"--mmpo_gamma {self.mmpo_gamma} must be > 0 (inf: label 1 for every R > 0, plain DPO)")
        if self.rpo_variant not in RPO_VARIANTS:
            raise ValueError(f"--rpo_variant {self.rpo_variant!r}: choose one of {RPO_VARIANTS}")
        if not self.rpo_eta > 0 or (math.isinf(self.rpo_eta) and self.rpo_variant != "bwd_kl"):
            raise ValueError(f"--rpo_eta {self.rpo_eta} must be > 0, and finite with --rpo_variant {self.rpo_variant} "
                             "(its target eta * R must be a number; only bwd_kl has the limit eta = inf, plain DPO)")
        self.check_score_columns()
        self.policy  # validates alpha / coef_* now, with their messages
        self.truncation

    def check_score_columns(self) -> None:
        given = [c for c in (self.score_chosen_column, self.score_rejected_column) if c]
        if not given:
            return
        if len(given) == 1:
            raise ValueError("set both --score_chosen_column and --score_rejected_column (R = chosen's score - rejected's), or neither")
        if self.score_chosen_column == self.score_rejected_column:
            raise ValueError(f"--score_chosen_column and --score_rejected_column both name {self.score_chosen_column!r}: R would be 0 on every row")
        if not self.uses_reward_diff:
            raise ValueError(f"--score_chosen_column / --score_rejected_column give R, which --method {self.method} at --alpha 0 does not use: "
                             "drop them, or set --alpha > 0 or a method that reads R (odpo, mmpo, rpo)")

    @property
    def uses_coefficients(self) -> bool:
        return self.alpha != 0

    @property
    def uses_reward_diff(self) -> bool:
        """Whether the rows must carry R: for the weight R^α (α > 0), or for a loss that reads R itself."""
        from rdo.core.methods import get_method

        return self.alpha != 0 or get_method(self.method).reads_reward_diff

    @property
    def score_columns(self) -> tuple[str, str] | None:
        return (self.score_chosen_column, self.score_rejected_column) if self.score_chosen_column else None
