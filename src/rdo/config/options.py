"""The option mixins and constants the commands' configs are built from: each shared field has one home here.

Training commands extend `transformers.TrainingArguments`, so every Trainer option (learning
rate, schedulers, DeepSpeed/FSDP, checkpointing, logging) is available under the name users know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdo.core.coefficients import NONPOSITIVE, NORMALIZE, CoefficientPolicy
from rdo.data.tokenize import Truncation


def arg(default, help: str, **kw):
    """A dataclass field whose `help` shows in `rdo <command> --help`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


METHODS = ("dpo", "ipo", "rrhf", "kto", "simpo", "odpo", "mmpo", "rpo")
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "kto": 0.1, "simpo": 2.0, "odpo": 0.1, "mmpo": 0.1, "rpo": 0.1}  # β's scale differs by method; RRHF has none
DTYPE_CHOICES = ["auto", "float32", "bfloat16", "float16"]


# --- options shared by several commands: each field has one home ---------------------------------

@dataclass
class DatasetOptions:
    """The data a command reads (every command)."""

    dataset_name: str | None = arg(None, "Preference data: a .jsonl/.json/.parquet/.csv file, a save_to_disk folder, or a hub id.", content="dataset")
    dataset_split: str = arg("train", "Split to read from a dataset folder or hub id.")
    skip_invalid: bool = arg(False, "Drop invalid rows (counted and reported by reason) instead of stopping at the first.")
    dedupe_ids: bool = arg(False, "Rows sharing an `id` value: keep the first and count the others, instead of stopping with an error naming both rows.")


# --- reliability ---
# (a mixin, so it must precede the training configs that use it; its fields show in their --help)

@dataclass
class EvalDatasetOptions:
    """Held-out data evaluated during training (the training commands)."""

    eval_dataset_name: str | None = arg(None, "Optional held-out preference data, evaluated unweighted (loss, accuracy, margins) at each evaluation.", content="dataset")
    eval_dataset_split: str = arg("test", "Split of --eval_dataset_name to read from a dataset folder or hub id.")

    def evaluate_each_epoch_when_given(self) -> None:
        """A held-out set is given to be evaluated: without an --eval_strategy, evaluate each epoch."""
        if self.eval_dataset_name and str(self.eval_strategy) in ("no", "IntervalStrategy.NO"):
            self.eval_strategy = "epoch"


@dataclass
class DtypeOptions:
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=DTYPE_CHOICES)


@dataclass
class AttentionOptions:
    attn_implementation: str | None = arg(None, "Attention kernel: eager, sdpa, flash_attention_2, ... (default: transformers' choice for the model).")


@dataclass
class ModelLoadOptions(AttentionOptions):
    """How a command loads a model given by name (rdo.models.load_pretrained): attention kernel and hub revision."""

    model_revision: str | None = arg(None, "Hub branch, tag or commit of --model_name_or_path (default: main); an error for a local folder, which has no revisions.")


@dataclass
class LoraOptions:
    lora_r: int = arg(0, "LoRA rank; 0 trains all weights (a scorer's new head is always fully trained).")
    lora_alpha: int = arg(16, "LoRA scaling α.")
    lora_dropout: float = arg(0.05, "LoRA dropout (kept under --disable_dropout, which turns off the base model's own).")
    lora_target_modules: str = arg("all-linear", "Comma-separated module names to adapt, or all-linear.")


@dataclass
class TruncationOptions:
    max_length: int = arg(1024, "Max tokens of prompt + response; responses are cut from the right, EOS kept.")
    max_prompt_length: int | None = arg(512, "Max prompt tokens; longer prompts lose their beginning.")

    @property
    def truncation(self) -> Truncation:
        return Truncation(self.max_length, self.max_prompt_length)


@dataclass
class BatchLayoutOptions:
    """How sequences are laid out in a batch: layouts that give the same numbers as padded rows, with less work."""

    prefix_sharing: bool = arg(True, "One [prompt | chosen | rejected] sequence per pair (rrhf: [prompt | y_1 | ... | y_K]), so the prompt is computed once: rdo align's steps and reference pass (dpo/ipo/simpo/rrhf; kto keeps padded rows), rdo train-rm's steps (not with --cache_frozen). Exact; checked once per model against padded rows, used where the attention takes the mask (else one warning, then padded rows). --no-prefix-sharing: padded prompt+response rows.")
    padding_free: bool = arg(False, "Pack each batch's sequences into one row (same commands as --prefix_sharing), back to back, with a block attention mask and position ids restarting per sequence: no padding (exact, checked as --prefix_sharing is). Off by default: on CPU it measured slower than prefix-shared rows (the mask is dense over the packed row); FlashAttention's varlen kernels are not wired in yet.")


@dataclass
class TrainerDefaults:
    """Trainer options whose defaults differ from transformers' (listed before TrainingArguments, so they win)."""

    pad_to_multiple_of: int = arg(1, "Pad batch length to a multiple of this (8 helps tensor cores).")
    disable_dropout: bool = arg(True, "Turn off the model's dropout (as TRL does), so log-probs and scores are deterministic; --no-disable-dropout keeps it.")
    remove_unused_columns: bool = arg(False, "Keep the per-row columns (weight, reference log-probs, row id, margin) the loss needs.")
    train_sampling_strategy: str = arg("random", "Sampler: random (default: fresh batches every epoch), group_by_length (less padding; see README) or sequential.")
    logging_steps: float = arg(10, "Log every N steps.")


@dataclass
class CoefficientOptions:
    """How a raw reward difference R becomes a weight R^α (rdo.core.coefficients): `rdo align`, and `rdo score --weight_column`."""

    alpha: float = arg(0.5, "Exponent α on the reward difference R: weight = R^α. 0 = the plain method, exactly.")
    coef_nonpositive: str = arg("clip", "What R <= 0 means: clip (raise to --coef_floor), drop the pair, or abs.", choices=list(NONPOSITIVE))
    coef_floor: float = arg(1e-2, "Smallest R used in R^α under clip/abs, so doubted pairs count little but not zero.")
    coef_normalize: str = arg("mean", "Rescale weights to mean 1 over the dataset (mean), or use R^α as is (none, the paper).", choices=list(NORMALIZE))

    @property
    def policy(self) -> CoefficientPolicy:
        return CoefficientPolicy(self.alpha, self.coef_nonpositive, self.coef_floor, self.coef_normalize)


@dataclass
class ReliabilityArgs:
    """Resume, checkpoint, numerical-guard and loading-safety options shared by every training command."""

    overwrite_output_dir: bool = arg(False, "Start fresh even when --output_dir holds checkpoints (default: resume from the last one).")
    max_nonfinite_steps: int = arg(5, "Skip an optimizer step whose loss or gradient norm is NaN/inf; stop after this many in a row.")
    trust_remote_code: bool = arg(False, "Allow a model folder / hub repo to run its own Python code when loading (off: only transformers' own classes).")
    save_strategy: str = arg("steps", "Checkpoint strategy: steps (default, every --save_steps), epoch, or no. The final model is always saved.")
    save_steps: float = arg(500, "Write a checkpoint every N optimizer steps (a crash loses at most N steps).")
    save_total_limit: int | None = arg(2, "Keep only the newest N checkpoints.")

    def __post_init__(self):
        import torch

        from rdo.utils.distributed import check_trainer_launch, zero_stage

        if self.max_nonfinite_steps < 1:
            raise ValueError(f"--max_nonfinite_steps {self.max_nonfinite_steps} must be >= 1")
        check_trainer_launch(self.use_cpu)  # before TrainingArguments, which would join the process group
        if getattr(self, "lora_r", 0) > 0 and zero_stage(self.deepspeed) == 3:
            raise ValueError("DeepSpeed ZeRO-3 with LoRA (--lora_r): the final merged save hangs (README, known gap); "
                             "use ZeRO-2 (configs/accelerate/zero2.yaml) for LoRA, or drop --lora_r to train all weights under ZeRO-3.")
        if not torch.accelerator.is_available():  # pinned memory needs an accelerator; torch warns on every loader
            self.dataloader_pin_memory = False
        super().__post_init__()


# --- scorers ---

SCORER_TEMPLATES = ("paper", "chat")  # or any string with {x}, {y1} and {y2}; see rdo.score.scorers
SCORER_POOLINGS = ("last", "mean")  # what the score head reads; see rdo.score.scorers
RANK_WITH = ("data", "reward", "difference")

RESERVED_SCORE_COLUMNS = ("rdo_reward_diff", "rdo_score_chosen", "rdo_score_rejected", "rdo_scores", "rdo_fold", "scores", "scores_original")


@dataclass
class ScorerRunOptions:
    """How `rdo score` and `rdo eval accuracy` load and run a trained scorer."""

    scorer: str | None = arg(None, "Scorer folder written by `rdo train-rm` or `rdo train-diff` (its rdo.json says which).", content="model")
    batch_size: int = arg(32, "Sequences per forward pass (batches are sorted by length, so little is padding).")
    max_batch_tokens: int | None = arg(None, "Also cap padded tokens per forward, so batches of long sequences shrink (0: no cap). Default: 1024 on CPU (big batches of long sequences only thrash its caches), no cap on GPU.")
    max_length: int | None = arg(None, "Override the scorer's max_length from rdo.json.")
    max_prompt_length: int | None = arg(None, "Override the scorer's max_prompt_length from rdo.json.")
    device: str = arg("auto", "Device: auto (cuda when available), cpu, cuda, cuda:1, ...")
