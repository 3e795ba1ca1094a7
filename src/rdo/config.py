"""One config dataclass per command. Each field's `help` is its one-line doc and its CLI help.

Training commands extend `transformers.TrainingArguments`, so every Trainer option (learning
rate, schedulers, DeepSpeed/FSDP, checkpointing, logging) is available under the name users know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from rdo.coefficients import NONPOSITIVE, NORMALIZE, CoefficientPolicy
from rdo.data.tokenize import Truncation


def arg(default, help: str, **kw):
    """A dataclass field whose `help` shows in `rdo <command> --help`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


METHODS = ("dpo", "ipo", "rrhf", "kto", "simpo")
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "kto": 0.1, "simpo": 2.0, "rrhf": 0.1}  # β's scale differs by method


@dataclass
class AlignConfig(TrainingArguments):
    """`rdo align`: offline preference optimisation (DPO/IPO/RRHF/KTO/SimPO) with reward difference coefficients."""

    model_name_or_path: str | None = arg(None, "Policy model: a local folder or a hub id.")
    dataset_name: str | None = arg(None, "Preference data: .jsonl/.json/.parquet/.csv file, a save_to_disk folder, or a hub id.")
    dataset_split: str = arg("train", "Split to read from a dataset folder or hub id.")
    eval_dataset_name: str | None = arg(None, "Optional held-out preference data, evaluated unweighted (loss, reward accuracy and margins) at each evaluation.")
    eval_dataset_split: str = arg("test", "Split of --eval_dataset_name to read from a dataset folder or hub id.")
    method: str = arg("dpo", "Alignment loss: dpo/ipo/simpo train on pairs, rrhf on ranked rows (or pairs), kto on unpaired rows (or pairs).", choices=list(METHODS))
    beta: float | None = arg(None, "β: implicit-KL strength for DPO/IPO/KTO (default 0.1); reward scale for SimPO (default 2.0); unused by RRHF.")
    label_smoothing: float = arg(0.0, "Conservative DPO/SimPO: assumed fraction ε of flipped labels (0 = the plain loss).")
    ipo_average_log_ratios: bool = arg(True, "IPO: average log-ratios per token (TRL's convention) instead of summing.")
    simpo_gamma: float = arg(0.5, "SimPO: target reward margin γ, in reward units (after scaling by β).")
    rrhf_length_penalty: float = arg(1.0, "RRHF: a response's score is its summed log-prob / length^this (0 = summed).")
    rrhf_sft_weight: float = arg(1.0, "RRHF: weight of the SFT cross-entropy on each prompt's best-scored response.")
    kto_desirable_weight: float = arg(1.0, "KTO: λ_D, the loss weight of desirable examples.")
    kto_undesirable_weight: float = arg(1.0, "KTO: λ_U, the loss weight of undesirable examples.")
    # --- reward difference coefficients (paper Eq. 2) ---
    alpha: float = arg(0.5, "Exponent α on the reward difference R: weight = R^α. 0 = the plain method, exactly.")
    coef_column: str = arg("rdo_reward_diff", "Column holding the raw reward difference R (written by `rdo score`).")
    coef_nonpositive: str = arg("clip", "What R <= 0 means: clip (raise to --coef_floor), drop the pair, or abs.", choices=list(NONPOSITIVE))
    coef_floor: float = arg(1e-2, "Smallest R used in R^α under clip/abs, so doubted pairs count little but not zero.")
    coef_normalize: str = arg("mean", "Rescale weights to mean 1 over the dataset (mean), or use R^α as is (none, the paper).", choices=list(NORMALIZE))
    # --- data ---
    max_length: int = arg(1024, "Max tokens of prompt + response; responses are cut from the right, EOS kept.")
    max_prompt_length: int | None = arg(512, "Max prompt tokens; longer prompts lose their beginning.")
    skip_invalid: bool = arg(False, "Drop invalid rows (counted and reported by reason) instead of stopping at the first.")
    pad_to_multiple_of: int = arg(1, "Pad batch length to a multiple of this (8 helps tensor cores).")
    # --- reference model ---
    precompute_ref: bool = arg(True, "Compute reference log-probs once before training and cache them (the reference is then not held in memory).")
    ref_model_name_or_path: str | None = arg(None, "Reference model; default: the policy's initial weights (or the base with LoRA disabled).")
    ref_cache_dir: str | None = arg(None, "Where cached reference log-probs go (default: next to a local data file, else ~/.cache/rdo).")
    # --- model ---
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])
    lora_r: int = arg(0, "LoRA rank; 0 trains all weights.")
    lora_alpha: int = arg(16, "LoRA scaling α.")
    lora_dropout: float = arg(0.05, "LoRA dropout.")
    lora_target_modules: str = arg("all-linear", "Comma-separated module names to adapt, or all-linear.")
    # --- Trainer defaults that differ from transformers' ---
    learning_rate: float = arg(1e-6, "Peak learning rate (DPO-scale default).")
    remove_unused_columns: bool = arg(False, "Keep the per-row columns (weight, reference log-probs, row id) the loss needs.")
    train_sampling_strategy: str = arg("group_by_length", "Sampler: group_by_length (default, cuts padding), random or sequential.")
    logging_steps: float = arg(10, "Log every N steps.")
    save_strategy: str = arg("no", "Checkpoint strategy (the final model is always saved).")

    def __post_init__(self):
        if self.output_dir is None:
            raise ValueError("set --output_dir: where the trained model, config and metrics go")
        if self.eval_dataset_name and str(self.eval_strategy) in ("no", "IntervalStrategy.NO"):
            self.eval_strategy = "epoch"  # a held-out set is given to be evaluated
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("set --model_name_or_path to the policy model (a local folder or a hub id)")
        if not self.dataset_name:
            raise ValueError("set --dataset_name to a preference data file, a save_to_disk folder or a hub id")
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r}: choose one of {METHODS}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"--label_smoothing {self.label_smoothing} must be in [0, 0.5)")
        if self.beta is None:
            self.beta = DEFAULT_BETA[self.method]
        if self.beta <= 0:
            raise ValueError(f"--beta {self.beta} must be > 0")
        if self.rrhf_length_penalty < 0:
            raise ValueError(f"--rrhf_length_penalty {self.rrhf_length_penalty} must be >= 0 (0 ranks by summed log-probs)")
        if self.rrhf_sft_weight < 0:
            raise ValueError(f"--rrhf_sft_weight {self.rrhf_sft_weight} must be >= 0 (0 turns the SFT term off)")
        if self.kto_desirable_weight <= 0 or self.kto_undesirable_weight <= 0:
            raise ValueError("--kto_desirable_weight and --kto_undesirable_weight must be > 0")
        self.policy  # validates alpha / coef_* now, with their messages
        self.truncation

    @property
    def policy(self) -> CoefficientPolicy:
        return CoefficientPolicy(self.alpha, self.coef_nonpositive, self.coef_floor, self.coef_normalize)

    @property
    def truncation(self) -> Truncation:
        return Truncation(self.max_length, self.max_prompt_length)

    @property
    def uses_coefficients(self) -> bool:
        return self.alpha != 0
