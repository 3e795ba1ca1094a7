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


# --- scorers: reward model, difference model, scoring, accuracy ---------------------------------

SCORER_TEMPLATES = ("paper", "chat")  # or any string with {x}, {y1} and {y2}; see rdo.scorers
RANK_WITH = ("data", "reward", "difference")


@dataclass
class _ScorerTrainConfig(TrainingArguments):
    """Fields shared by `rdo train-rm` and `rdo train-diff` (not a command itself)."""

    model_name_or_path: str | None = arg(None, "Base causal LM for the scorer: a local folder or a hub id. A new 1-output head is added.")
    dataset_name: str | None = arg(None, "Preference data (pairs, or ranked rows expanded into pairs): a file, a save_to_disk folder or a hub id.")
    dataset_split: str = arg("train", "Split to read from a dataset folder or hub id.")
    eval_dataset_name: str | None = arg(None, "Optional held-out preference data; loss and accuracy are logged on it at each evaluation.")
    eval_dataset_split: str = arg("test", "Split of --eval_dataset_name to read from a dataset folder or hub id.")
    skip_invalid: bool = arg(False, "Drop invalid rows (counted and reported by reason) instead of stopping at the first.")
    head_learning_rate: float = arg(1e-4, "Learning rate of the new score head (the paper: 1e-4; --learning_rate is the backbone's, 1e-5).")
    pad_to_multiple_of: int = arg(1, "Pad batch length to a multiple of this (8 helps tensor cores).")
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])
    lora_r: int = arg(0, "LoRA rank; 0 trains all weights. The score head is always fully trained.")
    lora_alpha: int = arg(16, "LoRA scaling α.")
    lora_dropout: float = arg(0.05, "LoRA dropout.")
    lora_target_modules: str = arg("all-linear", "Comma-separated module names to adapt, or all-linear.")
    freeze_backbone: bool = arg(False, "Train only the new score head on the frozen backbone (a linear probe: no backward through the LM).")
    # --- Trainer defaults that differ from transformers' ---
    learning_rate: float = arg(1e-5, "Peak learning rate of the backbone (the paper: 1e-5).")
    num_train_epochs: float = arg(1.0, "Epochs (the paper trains scorers for one).")
    remove_unused_columns: bool = arg(False, "Keep the per-row columns (row id, margin) the loss needs.")
    train_sampling_strategy: str = arg("group_by_length", "Sampler: group_by_length (default, cuts padding), random or sequential.")
    logging_steps: float = arg(10, "Log every N steps.")
    save_strategy: str = arg("no", "Checkpoint strategy (the final model is always saved).")

    def __post_init__(self):
        if self.output_dir is None:
            raise ValueError("set --output_dir: where the trained scorer (a Hugging Face folder + rdo.json) goes")
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("set --model_name_or_path to the base causal LM (a local folder or a hub id)")
        if not self.dataset_name:
            raise ValueError("set --dataset_name to a preference data file, a save_to_disk folder or a hub id")
        if self.head_learning_rate <= 0 or self.learning_rate <= 0:
            raise ValueError("--learning_rate and --head_learning_rate must be > 0")
        if self.freeze_backbone and self.lora_r > 0:
            raise ValueError("--freeze_backbone trains the head alone; drop --lora_r (or --freeze_backbone)")
        self.truncation  # validates max_length / max_prompt_length now, with their messages

    @property
    def truncation(self) -> Truncation:
        return Truncation(self.max_length, self.max_prompt_length)


@dataclass
class TrainRMConfig(_ScorerTrainConfig):
    """`rdo train-rm`: a pointwise Bradley–Terry reward model r(x, y) on any causal LM (paper Eq. 3)."""

    max_length: int = arg(1024, "Max tokens of prompt + response; responses are cut from the right, EOS kept.")
    max_prompt_length: int | None = arg(512, "Max prompt tokens; longer prompts lose their beginning.")
    margin_column: str = arg("margin", "Optional per-row column m for the loss -log σ(r_w - r_l - m); ignored when the data has no such column.")


@dataclass
class TrainDiffConfig(_ScorerTrainConfig):
    """`rdo train-diff`: the reward difference model R(x, y1, y2) with its two regularisers (paper Eqs. 4-6)."""

    max_length: int = arg(2048, "Max tokens of the whole comparison (twice a reward model's: it holds both responses).")
    max_prompt_length: int | None = arg(1024, "Max query tokens; longer queries lose their beginning. The responses share what is left fairly.")
    template: str = arg("paper", "Input layout: paper ('Query: {x}; Response 1: {y1}; Response 2: {y2}'), chat (the same as one user turn of the tokenizer's chat template), or your own string with {x}, {y1}, {y2}.")
    beta0: float = arg(0.1, "β0: weight of the duplication term f(x, y, y)^2 (Eq. 6; the paper picks β0 = β1 from 0.1, 0.01, 0.001).")
    beta1: float = arg(0.1, "β1: weight of the reverse term (f(x, y1, y2) + f(x, y2, y1))^2 (Eq. 6).")

    def __post_init__(self):
        super().__post_init__()
        if self.beta0 < 0 or self.beta1 < 0:
            raise ValueError(f"--beta0 {self.beta0} and --beta1 {self.beta1} must be >= 0 (0 turns a regulariser off)")
        if "{" not in self.template and self.template not in SCORER_TEMPLATES:
            raise ValueError(f"--template {self.template!r}: use one of {SCORER_TEMPLATES} or a string with {{x}}, {{y1}} and {{y2}}")


@dataclass
class ScoreConfig:
    """`rdo score`: add the reward difference R (and pointwise scores) to every row of a preference dataset.

    Cross-fitting (--folds K) trains K scorers with the recipe of --scorer, each on K-1 folds, and scores
    every fold with the one scorer that never saw it. Cost: K trainings on (K-1)/K of the data each,
    about (K-1)x the training compute of one scorer (4x for K=5), plus the usual single scoring pass.
    """

    scorer: str | None = arg(None, "Scorer folder written by `rdo train-rm` or `rdo train-diff` (its rdo.json says which).")
    dataset_name: str | None = arg(None, "Preference data to score: a file, a save_to_disk folder or a hub id.")
    output: str | None = arg(None, "Output .jsonl (or .parquet): the input rows unchanged plus rdo_reward_diff (and rdo_score_* for reward models).")
    dataset_split: str = arg("train", "Split to read from a dataset folder or hub id.")
    symmetrize: bool = arg(True, "Difference model: R = (f(x,y_w,y_l) - f(x,y_l,y_w)) / 2 (two passes). --no-symmetrize: the paper's single pass f(x,y_w,y_l).")
    rank_with: str = arg("data", "Ranked rows: keep the data's `scores` (data), or re-rank responses with the scorer (reward, or difference = the paper's 'RRHF (diff)'); the old scores are kept as scores_original.", choices=list(RANK_WITH))
    batch_size: int = arg(32, "Sequences per forward pass (batches are sorted by length, so little is padding).")
    max_batch_tokens: int | None = arg(None, "Also cap padded tokens per forward, so batches of long sequences shrink (0: no cap). Default: 1024 on CPU (big batches of long sequences only thrash its caches), no cap on GPU.")
    shard_size: int = arg(1024, "Rows per shard written to <output>.shards/; a killed run resumes from the last complete shard.")
    dup_check_rows: int = arg(256, "Difference model: also score f(x, y, y) on this many rows to report the mean |f(x,y,y)| residual (0: skip).")
    folds: int = arg(1, "Cross-fitting: K > 1 trains K scorers with --scorer's recipe (about (K-1)x one training) so no row is scored in-sample.")
    seed: int = arg(0, "Seed for the fold split.")
    max_length: int | None = arg(None, "Override the scorer's max_length from rdo.json.")
    max_prompt_length: int | None = arg(None, "Override the scorer's max_prompt_length from rdo.json.")
    device: str = arg("auto", "Device: auto (cuda when available), cpu, cuda, cuda:1, ...")
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])
    skip_invalid: bool = arg(False, "Leave invalid rows out of the output (counted and reported) instead of stopping at the first.")
    overwrite: bool = arg(False, "Discard shards of an earlier, different run instead of refusing to mix them.")
    keep_shards: bool = arg(False, "Keep <output>.shards/ after the output is complete.")

    def __post_init__(self):
        for name in ("scorer", "dataset_name", "output"):
            if not getattr(self, name):
                raise ValueError(f"set --{name}")
        if not self.output.endswith((".jsonl", ".parquet")):
            raise ValueError(f"--output {self.output!r}: write .jsonl (default) or .parquet")
        if self.rank_with not in RANK_WITH:
            raise ValueError(f"--rank_with {self.rank_with!r}: choose one of {RANK_WITH}")
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError("--batch_size and --shard_size must be >= 1")
        if self.folds < 1:
            raise ValueError(f"--folds {self.folds} must be >= 1 (1 = no cross-fitting)")
        if self.dup_check_rows < 0:
            raise ValueError("--dup_check_rows must be >= 0")


@dataclass
class EvalAccuracyConfig:
    """`rdo eval accuracy`: pairwise accuracy of a reward or difference model on held-out preference data."""

    scorer: str | None = arg(None, "Scorer folder written by `rdo train-rm` or `rdo train-diff`.")
    dataset_name: str | None = arg(None, "Held-out preference data (pairs, or ranked rows: every pair with different scores counts).")
    dataset_split: str = arg("test", "Split to read from a dataset folder or hub id.")
    output: str | None = arg(None, "Write the metrics JSON here (default: print it after the table).")
    symmetrize: bool = arg(True, "Difference model: judge by the antisymmetrised R (both orders); the single-pass accuracy is reported too.")
    bootstrap: int = arg(1000, "Bootstrap resamples for the 95% interval (0: none).")
    num_bins: int = arg(5, "Confidence table: equal-count bins of |R| (the paper's Table 15).")
    bin_edges: str | None = arg(None, "Confidence table: explicit comma-separated |R| edges instead, e.g. 0,0.5,1,2.")
    batch_size: int = arg(32, "Sequences per forward pass.")
    max_batch_tokens: int | None = arg(None, "Also cap padded tokens per forward (0: no cap; default: 1024 on CPU, no cap on GPU).")
    max_length: int | None = arg(None, "Override the scorer's max_length from rdo.json.")
    max_prompt_length: int | None = arg(None, "Override the scorer's max_prompt_length from rdo.json.")
    seed: int = arg(0, "Seed for the bootstrap.")
    device: str = arg("auto", "Device: auto (cuda when available), cpu, cuda, ...")
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])
    skip_invalid: bool = arg(False, "Leave invalid rows out (counted and reported) instead of stopping at the first.")

    def __post_init__(self):
        for name in ("scorer", "dataset_name"):
            if not getattr(self, name):
                raise ValueError(f"set --{name}")
        if self.bootstrap < 0 or self.num_bins < 1:
            raise ValueError("--bootstrap must be >= 0 and --num_bins >= 1")
        if self.bin_edges is not None:
            self.edges  # validates

    @property
    def edges(self) -> list[float] | None:
        if self.bin_edges is None:
            return None
        try:
            edges = [float(e) for e in self.bin_edges.split(",") if e.strip()]
        except ValueError:
            raise ValueError(f"--bin_edges {self.bin_edges!r}: expected comma-separated numbers like 0,0.5,1,2") from None
        if len(edges) < 2 or edges != sorted(edges) or len(set(edges)) != len(edges):
            raise ValueError(f"--bin_edges {self.bin_edges!r}: need at least two increasing numbers")
        return edges


# --- demo ---------------------------------------------------------------------------------------

DEMO_PRESETS = ("smollm2", "tiny")
DEMO_STAGES = ("data", "train-rm", "train-diff", "score", "align", "generate", "gold")


@dataclass
class DemoConfig:
    """`rdo demo`: the whole RDO pipeline on SmolLM2-135M-Instruct (offline, CPU), ending in a table with intervals."""

    preset: str = arg("smollm2", "smollm2: the real model, about 15 min on 2 cores; tiny: a locally built 2-layer model on fewer prompts (a smoke run in seconds).", choices=list(DEMO_PRESETS))
    output_dir: str = arg("runs/demo", "Run folder: data, scorers, policies, generations, report.json and table.md.")
    seed: int = arg(0, "Seed of the label draw and of every training (same seed, same table).")
    label_noise: float = arg(0.3, "Bradley-Terry temperature tau of the labels: P(a preferred) = sigmoid((gold_a - gold_b) / tau); 0 = noise-free.")
    alpha: float = arg(0.5, "α of the two DPO+rc runs (weight = R^α).")
    folds: int = arg(1, "Cross-fitting for `rdo score`: K > 1 scores every training pair with scorers that never saw it.")
    candidates: str | None = arg(None, "Candidates file (default: the shipped src/rdo/demo/data/candidates.jsonl).")
    regenerate_data: bool = arg(False, "Sample the candidates file again from SmolLM2 (minutes), write it to --candidates or the shipped path, and stop.")
    train_prompts: int | None = arg(None, "Use only the first N training prompts (2 noisy pairs each); default: the preset's (smollm2: all 192).")
    test_prompts: int | None = arg(None, "Use only the first N held-out prompts; default: the preset's (smollm2: all 64).")
    dpo_pairs: int | None = arg(None, "DPO trains on the first N noisy training pairs; default: the preset's (smollm2: 96).")
    stop_after: str | None = arg(None, "Stop after this stage (data, train-rm, train-diff, score, align, generate); the report holds what ran.", choices=list(DEMO_STAGES))

    def __post_init__(self):
        if self.preset not in DEMO_PRESETS:
            raise ValueError(f"--preset {self.preset!r}: choose one of {DEMO_PRESETS}")
        if self.label_noise < 0:
            raise ValueError(f"--label_noise {self.label_noise} must be >= 0 (0 = labels follow the gold reward exactly)")
        if self.folds < 1:
            raise ValueError(f"--folds {self.folds} must be >= 1 (1 = no cross-fitting)")
        for name in ("train_prompts", "test_prompts", "dpo_pairs"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 2 (or unset for the preset's size)")
        if self.stop_after is not None and self.stop_after not in DEMO_STAGES:
            raise ValueError(f"--stop_after {self.stop_after!r}: choose one of {DEMO_STAGES}")
