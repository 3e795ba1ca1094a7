"""One config dataclass per command. Each field's `help` is its one-line doc and its CLI help.

Training commands extend `transformers.TrainingArguments`, so every Trainer option (learning
rate, schedulers, DeepSpeed/FSDP, checkpointing, logging) is available under the name users know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from rdo.core.coefficients import NONPOSITIVE, NORMALIZE, CoefficientPolicy
from rdo.data.tokenize import Truncation


def arg(default, help: str, **kw):
    """A dataclass field whose `help` shows in `rdo <command> --help`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


METHODS = ("dpo", "ipo", "rrhf", "kto", "simpo")
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "kto": 0.1, "simpo": 2.0}  # β's scale differs by method; RRHF has none
DTYPE_CHOICES = ["auto", "float32", "bfloat16", "float16"]


# --- options shared by several commands: each field has one home ---------------------------------

@dataclass
class DatasetOptions:
    """The data a command reads (every command)."""

    dataset_name: str | None = arg(None, "Preference data: a .jsonl/.json/.parquet/.csv file, a save_to_disk folder, or a hub id.")
    dataset_split: str = arg("train", "Split to read from a dataset folder or hub id.")
    skip_invalid: bool = arg(False, "Drop invalid rows (counted and reported by reason) instead of stopping at the first.")
    dedupe_ids: bool = arg(False, "Rows sharing an `id` value: keep the first and count the others, instead of stopping with an error naming both rows.")


# --- reliability ---
# (a mixin, so it must precede the training configs that use it; its fields show in their --help)

@dataclass
class EvalDatasetOptions:
    """Held-out data evaluated during training (the training commands)."""

    eval_dataset_name: str | None = arg(None, "Optional held-out preference data, evaluated unweighted (loss, accuracy, margins) at each evaluation.")
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
class TrainerDefaults:
    """Trainer options whose defaults differ from transformers' (listed before TrainingArguments, so they win)."""

    pad_to_multiple_of: int = arg(1, "Pad batch length to a multiple of this (8 helps tensor cores).")
    disable_dropout: bool = arg(True, "Turn off the model's dropout (as TRL does), so log-probs and scores are deterministic; --no-disable-dropout keeps it.")
    remove_unused_columns: bool = arg(False, "Keep the per-row columns (weight, reference log-probs, row id, margin) the loss needs.")
    train_sampling_strategy: str = arg("random", "Sampler: random (default: fresh batches every epoch), group_by_length (less padding; see README) or sequential.")
    logging_steps: float = arg(10, "Log every N steps.")


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
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"--max_nonfinite_steps {self.max_nonfinite_steps} must be >= 1")
        super().__post_init__()


@dataclass
class AlignConfig(TrainerDefaults, TruncationOptions, LoraOptions, ModelLoadOptions, DtypeOptions, EvalDatasetOptions, DatasetOptions, ReliabilityArgs, TrainingArguments):
    """`rdo align`: offline preference optimisation (DPO/IPO/RRHF/KTO/SimPO) with reward difference coefficients."""

    model_name_or_path: str | None = arg(None, "Policy model: a local folder or a hub id.")
    method: str = arg("dpo", "Alignment loss: dpo/ipo/simpo train on pairs, rrhf on ranked rows (or pairs), kto on unpaired rows (or pairs).", choices=list(METHODS))
    # --- method options: each method reads only its own (rdo.core.methods registry); others are refused ---
    beta: float | None = arg(None, "β: implicit-KL strength for DPO/IPO/KTO (default 0.1); reward scale for SimPO (default 2.0); not used by RRHF.")
    label_smoothing: float = arg(0.0, "Conservative DPO/SimPO: assumed fraction ε of flipped labels (0 = the plain loss).")
    ipo_average_log_ratios: bool = arg(True, "IPO: average log-ratios per token (TRL's convention) instead of summing.")
    simpo_gamma: float = arg(0.5, "SimPO: target reward margin γ, in reward units (after scaling by β).")
    rrhf_length_penalty: float = arg(1.0, "RRHF: a response's score is its summed log-prob / length^this (0 = summed).")
    rrhf_sft_weight: float = arg(1.0, "RRHF: weight of the SFT cross-entropy on each prompt's best-scored response.")
    kto_desirable_weight: float = arg(1.0, "KTO: λ_D, the loss weight of desirable examples.")
    kto_undesirable_weight: float = arg(1.0, "KTO: λ_U, the loss weight of undesirable examples.")
    # --- reward difference coefficients (paper Eq. 2) ---
    alpha: float = arg(0.5, "Exponent α on the reward difference R: weight = R^α. 0 = the plain method, exactly.")
    coef_column: str = arg("rdo_reward_diff", "Column holding the raw reward difference R (written by `rdo score`). Pairs and unpaired rows must carry it when α > 0; ranked rows without it take R_ij = scores[j] - scores[i] (logged).")
    coef_nonpositive: str = arg("clip", "What R <= 0 means: clip (raise to --coef_floor), drop the pair, or abs.", choices=list(NONPOSITIVE))
    coef_floor: float = arg(1e-2, "Smallest R used in R^α under clip/abs, so doubted pairs count little but not zero.")
    coef_normalize: str = arg("mean", "Rescale weights to mean 1 over the dataset (mean), or use R^α as is (none, the paper).", choices=list(NORMALIZE))
    # --- reference model ---
    precompute_ref: bool = arg(True, "Compute reference log-probs once before training and cache them (the reference is then not held in memory).")
    ref_model_name_or_path: str | None = arg(None, "Reference model (precomputed or live, with or without LoRA); default: the policy's initial weights (with LoRA: the base, adapter disabled).")
    ref_model_revision: str | None = arg(None, "Hub branch, tag or commit of --ref_model_name_or_path (default: main; --model_revision applies to the policy only).")
    ref_cache_dir: str | None = arg(None, "Where cached reference log-probs go (default: next to a local data file, else ~/.cache/rdo).")
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
        self.policy  # validates alpha / coef_* now, with their messages
        self.truncation

    @property
    def policy(self) -> CoefficientPolicy:
        return CoefficientPolicy(self.alpha, self.coef_nonpositive, self.coef_floor, self.coef_normalize)

    @property
    def uses_coefficients(self) -> bool:
        return self.alpha != 0


# --- scorers: reward model, difference model, scoring, accuracy ---------------------------------

SCORER_TEMPLATES = ("paper", "chat")  # or any string with {x}, {y1} and {y2}; see rdo.score.scorers
SCORER_POOLINGS = ("last", "mean")  # what the score head reads; see rdo.score.scorers
RANK_WITH = ("data", "reward", "difference")


@dataclass
class _ScorerTrainConfig(TrainerDefaults, TruncationOptions, LoraOptions, ModelLoadOptions, DtypeOptions, EvalDatasetOptions, DatasetOptions, ReliabilityArgs, TrainingArguments):
    """Fields shared by `rdo train-rm` and `rdo train-diff` (not a command itself). Ranked rows are expanded into pairs."""

    model_name_or_path: str | None = arg(None, "Base causal LM for the scorer: a local folder or a hub id. A new 1-output head is added.")
    head_learning_rate: float = arg(1e-4, "Learning rate of the new score head (the paper: 1e-4; --learning_rate is the backbone's, 1e-5).")
    freeze_backbone: bool = arg(False, "Train only the new score head on the frozen backbone (a linear probe: no backward through the LM).")
    cache_frozen: bool = arg(False, "With --freeze_backbone / --train_top_layers: compute the frozen layers' output once per sequence and replay it every epoch, so an epoch costs the trained layers only (memory: tokens x hidden size x 4 bytes).")
    train_top_layers: int = arg(0, "Train only the head and the top N transformer layers (and the final norm); the embeddings and lower layers stay frozen, so the backward pass stops at layer L-N. 0: train every layer.")
    pooling: str = arg("last", "What the head reads: last (the paper: the last token's final hidden state) or mean (the mean over the response's tokens; a difference model: y1's mean minus y2's). Recorded in rdo.json, so scoring uses it.", choices=list(SCORER_POOLINGS))
    # --- Trainer defaults that differ from transformers' ---
    learning_rate: float = arg(1e-5, "Peak learning rate of the backbone (the paper: 1e-5).")
    num_train_epochs: float = arg(1.0, "Epochs (the paper trains scorers for one).")

    def __post_init__(self):
        if self.output_dir is None:
            raise ValueError("set --output_dir: where the trained scorer (a Hugging Face folder + rdo.json) goes")
        self.evaluate_each_epoch_when_given()
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("set --model_name_or_path to the base causal LM (a local folder or a hub id)")
        if not self.dataset_name:
            raise ValueError("set --dataset_name to a preference data file, a save_to_disk folder or a hub id")
        if self.head_learning_rate <= 0 or self.learning_rate <= 0:
            raise ValueError("--learning_rate and --head_learning_rate must be > 0")
        if self.freeze_backbone and self.lora_r > 0:
            raise ValueError("--freeze_backbone trains the head alone; drop --lora_r (or --freeze_backbone)")
        if self.train_top_layers < 0:
            raise ValueError(f"--train_top_layers {self.train_top_layers} must be >= 0 (0: train every layer)")
        if self.train_top_layers and (self.freeze_backbone or self.lora_r > 0):
            raise ValueError("--train_top_layers chooses which layers train: drop --freeze_backbone / --lora_r")
        if self.cache_frozen and not (self.freeze_backbone or self.train_top_layers):
            raise ValueError("--cache_frozen replays frozen layers: add --freeze_backbone or --train_top_layers N")
        if self.pooling not in SCORER_POOLINGS:
            raise ValueError(f"--pooling {self.pooling!r}: use last (the paper's head on the last token) or mean (over the response's tokens)")
        if self.cache_frozen and not self.disable_dropout:
            raise ValueError("--cache_frozen needs --disable_dropout: with dropout on, the frozen layers' output changes every epoch")
        self.truncation  # validates max_length / max_prompt_length now, with their messages


@dataclass
class TrainRMConfig(_ScorerTrainConfig):
    """`rdo train-rm`: a pointwise Bradley–Terry reward model r(x, y) on any causal LM (paper Eq. 3)."""

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
class ScorerRunOptions:
    """How `rdo score` and `rdo eval accuracy` load and run a trained scorer."""

    scorer: str | None = arg(None, "Scorer folder written by `rdo train-rm` or `rdo train-diff` (its rdo.json says which).")
    batch_size: int = arg(32, "Sequences per forward pass (batches are sorted by length, so little is padding).")
    max_batch_tokens: int | None = arg(None, "Also cap padded tokens per forward, so batches of long sequences shrink (0: no cap). Default: 1024 on CPU (big batches of long sequences only thrash its caches), no cap on GPU.")
    max_length: int | None = arg(None, "Override the scorer's max_length from rdo.json.")
    max_prompt_length: int | None = arg(None, "Override the scorer's max_prompt_length from rdo.json.")
    device: str = arg("auto", "Device: auto (cuda when available), cpu, cuda, cuda:1, ...")


@dataclass
class ScoreConfig(ScorerRunOptions, AttentionOptions, DtypeOptions, DatasetOptions):
    """`rdo score`: add the reward difference R (and pointwise scores) to every row of a preference dataset.

    Cross-fitting (--folds K) trains K scorers with the recipe of --scorer, each on K-1 folds, and scores
    every fold with the one scorer that never saw it (rdo.score.crossfit). Cost: K trainings on (K-1)/K of the
    data each, about (K-1)x the training compute of one scorer (4x for K=5), plus the usual single scoring pass.
    """

    output: str | None = arg(None, "Output .jsonl (or .parquet): the input rows unchanged plus rdo_reward_diff (and rdo_score_* for reward models).")
    symmetrize: bool = arg(True, "Difference model: R = (f(x,y_w,y_l) - f(x,y_l,y_w)) / 2 (two passes). --no-symmetrize: the paper's single pass f(x,y_w,y_l).")
    rank_with: str = arg("data", "Ranked rows: keep the data's `scores` (data), or re-rank responses with the scorer (reward, or difference = the paper's 'RRHF (diff)'); the old scores are kept as scores_original.", choices=list(RANK_WITH))
    shard_size: int = arg(1024, "Rows per shard written to <output>.shards/; a killed run resumes from its complete shards (with any shard size).")
    dup_check_rows: int = arg(256, "Difference model: also score f(x, y, y) on this many rows to report the mean |f(x,y,y)| residual (0: skip).")
    folds: int = arg(1, "Cross-fitting: K > 1 trains K scorers with --scorer's recipe (about (K-1)x one training) so no row is scored in-sample.")
    seed: int = arg(0, "Cross-fitting: seed of the fold split (fold k trains with the recipe's seed + k).")
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
class EvalAccuracyConfig(ScorerRunOptions, AttentionOptions, DtypeOptions, DatasetOptions):
    """`rdo eval accuracy`: pairwise accuracy of a reward or difference model on held-out preference data."""

    dataset_split: str = arg("test", "Split to read from a dataset folder or hub id.")
    output: str | None = arg(None, "Write the metrics JSON here (default: print it after the table).")
    symmetrize: bool = arg(True, "Difference model: judge by the antisymmetrised R (both orders); the single-pass accuracy is reported too.")
    bootstrap: int = arg(1000, "Bootstrap resamples for the 95% interval (0: none).")
    num_bins: int = arg(5, "Confidence table: equal-count bins of |R| (the paper's Table 15).")
    bin_edges: str | None = arg(None, "Confidence table: explicit comma-separated |R| edges instead, e.g. 0,0.5,1,2.")
    seed: int = arg(0, "Seed for the bootstrap.")

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


# --- judge and human evaluation ------------------------------------------------------------------


@dataclass
class EvalJudgeConfig:
    """`rdo eval judge`: pairwise LLM-as-judge of two generations files, both orders, several judges, cached calls."""

    generations_a: str | None = arg(None, "Generations JSONL of system A (written by `rdo generate`); win = A better.")
    generations_b: str | None = arg(None, "Generations JSONL of system B, generated from the same prompts.")
    output: str | None = arg(None, "Write judge.json here; per-example verdicts go to <stem>.examples.jsonl beside it.")
    judge_base_url: list[str] = arg([], "OpenAI-compatible base URL(s), e.g. https://api.openai.com/v1 (POST <url>/chat/completions).")
    judge_model: list[str] = arg([], "Judge model name(s), one per --judge_base_url, in the same order.")
    judge_api_key_env: list[str] = arg([], "Name(s) of environment variables holding each judge's API key (one for all, or one per URL; '-' = no key). The key is never written anywhere.")
    judge_local: list[str] = arg([], "Local transformers chat model folder(s) used as additional offline judges (greedy).")
    judge_template: str | None = arg(None, "Judge prompt file with {question}, {response_1} and {response_2} (default: the packaged judge_template.txt).")
    num_samples: int = arg(300, "Judge a fixed random sample of this many matched examples (all when fewer).")
    seed: int = arg(0, "Seed for the sample and the bootstrap.")
    cache_dir: str | None = arg(None, "Where every judge reply is cached, keyed by judge, prompt and decoding (default: $RDO_CACHE/judge, else ~/.cache/rdo/judge).")
    max_concurrency: int = arg(8, "Judge calls in flight at once (all judges together).")
    request_timeout: float = arg(60.0, "Seconds before one HTTP request counts as timed out (and is retried).")
    max_retries: int = arg(6, "Retries per call on 429, 5xx, timeouts, connection errors and malformed bodies.")
    retry_base_delay: float = arg(1.0, "Backoff: retry k waits about base * 2^k seconds (jittered), or the server's Retry-After when longer.")
    retry_max_delay: float = arg(60.0, "Backoff: the longest wait between retries (a longer Retry-After is still honoured).")
    judge_temperature: float = arg(0.0, "Sampling temperature sent to HTTP judges (part of the cache key).")
    judge_max_tokens: int = arg(1024, "Longest judge reply in tokens (part of the cache key).")
    bootstrap: int = arg(1000, "Bootstrap resamples for the 95% intervals (0: none).")
    device: str = arg("auto", "Device for --judge_local: auto (cuda when available), cpu, cuda, ...")

    def __post_init__(self):
        for name in ("generations_a", "generations_b", "output"):
            if not getattr(self, name):
                raise ValueError(f"set --{name}")
        if len(self.judge_base_url) != len(self.judge_model):
            raise ValueError(f"{len(self.judge_base_url)} --judge_base_url but {len(self.judge_model)} --judge_model: give one model name per URL, in the same order")
        if len(self.judge_api_key_env) not in (0, 1, len(self.judge_base_url)):
            raise ValueError(f"{len(self.judge_api_key_env)} --judge_api_key_env for {len(self.judge_base_url)} URLs: give one for all, or one per URL ('-' for none)")
        if not self.judge_base_url and not self.judge_local:
            raise ValueError("set --judge_base_url and --judge_model (an OpenAI-compatible endpoint), or --judge_local MODEL_DIR")
        if self.num_samples < 1 or self.max_concurrency < 1 or self.max_retries < 0 or self.judge_max_tokens < 1:
            raise ValueError("--num_samples, --max_concurrency and --judge_max_tokens must be >= 1, --max_retries >= 0")
        if self.request_timeout <= 0 or self.retry_base_delay < 0 or self.retry_max_delay < 0 or self.bootstrap < 0:
            raise ValueError("--request_timeout must be > 0; --retry_base_delay, --retry_max_delay and --bootstrap >= 0")
        if self.cache_dir is None:
            import os
            from pathlib import Path

            self.cache_dir = str(Path(os.environ.get("RDO_CACHE", Path.home() / ".cache" / "rdo")) / "judge")

    @property
    def decoding(self) -> dict:
        """Settings sent with every HTTP call (a local judge decodes greedily up to max_tokens)."""
        return {"temperature": self.judge_temperature, "max_tokens": self.judge_max_tokens}


@dataclass
class HumanExportConfig:
    """`rdo eval human export`: a blind, shuffled A/B sheet (CSV + a self-contained HTML page) and its hidden key."""

    generations_a: str | None = arg(None, "Generations JSONL of system A (written by `rdo generate`).")
    generations_b: str | None = arg(None, "Generations JSONL of system B, generated from the same prompts.")
    output_dir: str | None = arg(None, "Folder to send to annotators: sheet.csv and sheet.html (no hint of which system is which).")
    key: str | None = arg(None, "Where the hidden key goes (default: <output_dir>.key.json, beside the folder, not in it).")
    num_samples: int = arg(300, "Put a fixed random sample of this many matched examples on the sheet (all when fewer).")
    seed: int = arg(0, "Seed for the sample, the item order and which system is Response 1.")
    title: str = arg("Which response is better?", "Title of the HTML page.")

    def __post_init__(self):
        for name in ("generations_a", "generations_b", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"set --{name}")
        if self.num_samples < 1:
            raise ValueError("--num_samples must be >= 1")
        self.output_dir = self.output_dir.rstrip("/")
        if self.key is None:
            self.key = self.output_dir + ".key.json"
        from pathlib import Path

        if Path(self.output_dir).resolve() in Path(self.key).resolve().parents:
            raise ValueError(f"--key {self.key} is inside --output_dir: the annotators would see it; write it elsewhere")


@dataclass
class HumanTallyConfig:
    """`rdo eval human tally`: annotators' filled sheets + the key -> win/tie/loss per annotator and by majority, Fleiss' kappa."""

    sheets: list[str] = arg([], "Filled sheets: sheet.csv with the choice column filled, or the CSV the HTML page downloads (one per annotator).")
    key: str | None = arg(None, "The key written by `rdo eval human export`.")
    output: str | None = arg(None, "Write the tally JSON here (default: only print the table).")
    bootstrap: int = arg(1000, "Bootstrap resamples for the 95% intervals (0: none).")
    seed: int = arg(0, "Seed for the bootstrap.")

    def __post_init__(self):
        if not self.sheets:
            raise ValueError("set --sheets to one or more filled sheets")
        if not self.key:
            raise ValueError("set --key to the key file written by `rdo eval human export`")
        if self.bootstrap < 0:
            raise ValueError("--bootstrap must be >= 0")


# --- generation and reward evaluation ---------------------------------------------------------

@dataclass
class GenerateConfig(ModelLoadOptions):
    """`rdo generate`: responses of a causal LM (or base + LoRA adapter) to the prompts of any supported data file.

    Output: one JSONL row per (prompt, sample) with the input row's id, rdo_row, prompt, prompt_text,
    response, sample_index, model and decoding. Resumable (<output>.shards/); under torchrun every
    process generates its share and the output equals a single-process run.
    """

    model_name_or_path: str | None = arg(None, "Causal LM: a local folder, a hub id, or a LoRA adapter folder (its adapter_config.json names the base).")
    base_model_name_or_path: str | None = arg(None, "Base model for a LoRA adapter folder, overriding the one its adapter_config.json names.")
    dataset_name: str | None = arg(None, "Prompts: any preference/ranked/unpaired data or a file with just `prompt` (file, save_to_disk folder or hub id).")
    dataset_split: str = arg("test", "Split to read from a dataset folder or hub id.")
    output: str | None = arg(None, "Output .jsonl: one row per (prompt, sample).")
    max_new_tokens: int = arg(128, "Most tokens generated per response (generation also stops at EOS / end of turn).")
    do_sample: bool = arg(False, "Sample (with --temperature/--top_p/--top_k) instead of greedy or beam search.")
    temperature: float = arg(1.0, "Sampling temperature.")
    top_p: float = arg(1.0, "Sampling: nucleus probability mass (1 = off).")
    top_k: int = arg(0, "Sampling: keep the k most likely tokens (0 = off).")
    num_beams: int = arg(1, "Beam search width (1 = greedy, or sampling with --do_sample).")
    num_return_sequences: int = arg(1, "Responses per prompt: independent samples with --do_sample, else the best beams (<= --num_beams).")
    num_beam_groups: int = arg(1, "Diverse beam search: beam groups (the RRHF setting: --num_beams 4 --num_beam_groups 4 --diversity_penalty 1.0).")
    diversity_penalty: float = arg(0.0, "Diverse beam search: penalty for a group repeating another group's token.")
    seed: int = arg(0, "Sampling seed; every (input row, sample) has its own seed derived from it.")
    chat_text_prompts: bool = arg(False, "Also render plain-string prompts as one user turn of the chat template (message-list prompts always are).")
    batch_size: int = arg(16, "Sequences per generate() call (batches are sorted by prompt length).")
    shard_size: int = arg(256, "Prompts per shard written to <output>.shards/; a killed run resumes from the last complete shard.")
    device: str = arg("auto", "Device: auto (cuda, or cuda:<local rank> under torchrun, when available), cpu, cuda, ...")
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])
    skip_invalid: bool = arg(False, "Leave invalid input rows out (counted and reported) instead of stopping at the first.")
    overwrite: bool = arg(False, "Discard shards of an earlier, different run instead of refusing to mix them.")
    keep_shards: bool = arg(False, "Keep <output>.shards/ after the output is complete.")

    def __post_init__(self):
        for name in ("model_name_or_path", "dataset_name", "output"):
            if not getattr(self, name):
                raise ValueError(f"set --{name}")
        if not self.output.endswith(".jsonl"):
            raise ValueError(f"--output {self.output!r}: generations are written as .jsonl")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.shard_size < 1:
            raise ValueError("--max_new_tokens, --batch_size and --shard_size must be >= 1")
        if self.num_beams < 1 or self.num_return_sequences < 1 or self.num_beam_groups < 1:
            raise ValueError("--num_beams, --num_return_sequences and --num_beam_groups must be >= 1")
        if self.do_sample:
            if self.num_beams > 1:
                raise ValueError("--do_sample with --num_beams > 1 (beam sampling) is not supported; use one of them")
            if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
                raise ValueError("sampling needs --temperature > 0, 0 < --top_p <= 1 and --top_k >= 0")
        elif self.num_return_sequences > self.num_beams:
            raise ValueError(f"--num_return_sequences {self.num_return_sequences} needs --do_sample, or --num_beams >= it (the best beams are returned)")
        if self.num_beam_groups > 1 and self.num_beams % self.num_beam_groups:
            raise ValueError(f"--num_beams {self.num_beams} must be a multiple of --num_beam_groups {self.num_beam_groups}")
        if self.diversity_penalty and self.num_beam_groups == 1:
            raise ValueError("--diversity_penalty needs --num_beam_groups > 1 (diverse beam search)")


@dataclass
class EvalRewardConfig:
    """`rdo eval reward`: mean reward of generations files under reward models or reward functions, and every pair of files compared on the same prompts."""

    generations: list[str] = arg([], "Generations files written by `rdo generate` (one or more).", nargs="+")
    scorer: list[str] = arg([], "Reward model folders: `rdo train-rm` outputs or any AutoModelForSequenceClassification folder.", nargs="*")
    reward_fn: list[str] = arg([], "Python reward functions as module:function, each called as f(prompt: str, response: str) -> float.", nargs="*")
    output: str | None = arg(None, "Write reward.json here.")
    bootstrap: int = arg(1000, "Bootstrap resamples for the 95% intervals (0: none).")
    seed: int = arg(0, "Seed for the bootstrap.")
    batch_size: int = arg(32, "Sequences per forward pass of a reward model.")
    max_length: int | None = arg(None, "Reward models: max tokens of prompt + response (default: rdo.json's, else 1024).")
    max_prompt_length: int | None = arg(None, "Reward models: max prompt tokens (default: rdo.json's, else 512).")
    device: str = arg("auto", "Device: auto (cuda when available), cpu, cuda, ...")
    torch_dtype: str = arg("auto", "Weights dtype: auto, float32, bfloat16 or float16.", choices=["auto", "float32", "bfloat16", "float16"])

    def __post_init__(self):
        if not self.generations:
            raise ValueError("set --generations to one or more files written by `rdo generate`")
        if not self.scorer and not self.reward_fn:
            raise ValueError("set --scorer DIR and/or --reward_fn module:function: what gives the reward")
        for spec in self.reward_fn:
            if spec.count(":") != 1 or not all(spec.split(":")):
                raise ValueError(f"--reward_fn {spec!r}: expected module:function, e.g. rdo.demo.task:vader_reward")
        if self.bootstrap < 0 or self.batch_size < 1:
            raise ValueError("--bootstrap must be >= 0 and --batch_size >= 1")
        from pathlib import Path

        names = [Path(g).stem for g in self.generations]
        if len(set(names)) != len(names):
            raise ValueError(f"--generations {self.generations}: two files share a name; the table and reward.json tell files apart by name")


# --- pipeline and report ------------------------------------------------------------------------

ADAPTERS = ("none", "tldr")  # see rdo.pipeline.prepare


@dataclass
class PrepareConfig:
    """`rdo prepare`: copy a dataset (a file, a save_to_disk folder or a hub id) into one JSONL the other commands read, optionally converting its format."""

    dataset_name: str | None = arg(None, "Data to prepare: a .jsonl/.json/.parquet/.csv file, a save_to_disk folder or a hub id.")
    output: str | None = arg(None, "Output .jsonl: the rows as read (or as the adapter converts them), in input order.")
    dataset_split: str = arg("train", "Split to read from a dataset folder or hub id.")
    dataset_config: str | None = arg(None, "Hub dataset configuration name (e.g. comparisons for openai/summarize_from_feedback).")
    adapter: str = arg("none", "Format conversion: none (rows as they are) or tldr (summarize_from_feedback comparisons -> prompt/chosen/rejected).", choices=list(ADAPTERS))
    max_rows: int | None = arg(None, "Keep only the first N rows (a quick trial run); default: all.")

    def __post_init__(self):
        for name in ("dataset_name", "output"):
            if not getattr(self, name):
                raise ValueError(f"set --{name}")
        if not self.output.endswith(".jsonl"):
            raise ValueError(f"--output {self.output!r}: prepare writes .jsonl")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"--adapter {self.adapter!r}: choose one of {ADAPTERS}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"--max_rows {self.max_rows} must be >= 1")


@dataclass
class RunConfig:
    """`rdo run PIPELINE.yaml`: every stage of an experiment (prepare, scorers, score, align sweep, generate, evaluate, report) over one run folder; a rerun redoes only what changed."""

    pipeline: str | None = arg(None, "Pipeline YAML file (also accepted as the first argument); see README 'rdo run'.")
    run_dir: str | None = arg(None, "Override the pipeline's run_dir (where every stage's folder goes).")
    dry_run: bool = arg(False, "Validate every stage's config, the stage graph and the data formats (first rows) without training.")
    only: str | None = arg(None, "Run only this stage: redone (resumed if it was interrupted); its inputs must already be there.")
    from_stage: str | None = arg(None, "Redo this stage, then run those after it (skipping the unchanged); those before are reused as they are.", aliases=["--from"])
    dataset_override: list[str] = arg([], "SOURCE=FILE pairs: read FILE wherever the pipeline names the dataset SOURCE (a local copy of a hub dataset, or a fixture).")
    check_rows: int = arg(8, "--dry-run: how many first rows of each dataset to validate.")
    force: bool = arg(False, "Redo the selected stages even when their inputs and config are unchanged.")

    def __post_init__(self):
        if not self.pipeline:
            raise ValueError("name the pipeline file: rdo run PIPELINE.yaml")
        if self.only and self.from_stage:
            raise ValueError("give --only or --from, not both")
        for item in self.dataset_override:
            if "=" not in item:
                raise ValueError(f"--dataset_override {item!r}: expected SOURCE=FILE")
        if self.check_rows < 1:
            raise ValueError("--check_rows must be >= 1")

    @property
    def overrides(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.dataset_override)


@dataclass
class ReportConfig:
    """`rdo report RUN_DIR`: one self-contained HTML page (plots embedded) and a Markdown twin over a run folder."""

    run_dir: str | None = arg(None, "Run folder written by `rdo run` (also accepted as the first argument).")
    output_dir: str | None = arg(None, "Where report.html, report.md and the PNGs go (default: RUN_DIR/report).")
    title: str | None = arg(None, "Page title (default: the run folder's name).")

    def __post_init__(self):
        if not self.run_dir:
            raise ValueError("name the run folder: rdo report RUN_DIR")


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
    train_prompts: int | None = arg(None, "Use only the first N training prompts (a noisy pair for every two of their answers); default: the preset's (smollm2: all 192).")
    test_prompts: int | None = arg(None, "Use only the first N held-out prompts; default: the preset's (smollm2: all 64).")
    dpo_pairs: int | None = arg(None, "DPO trains on N noisy training pairs, two disjoint ones from each of the first prompts; default: the preset's (smollm2: 48).")
    stop_after: str | None = arg(None, "Stop after this stage (data, train-rm, train-diff, score, align, generate); the report holds what ran.", choices=list(DEMO_STAGES))
    validation: bool = arg(False, "Evaluate on validation prompts instead of the held-out ones (which are then not read): the last 48 training prompts, every pair of their answers; the first 144 train. For choosing settings.")
    recipe: str | None = arg(None, 'JSON overrides of the preset, for trying settings with --validation: {"rm": {...}, "diff": {...}, "align": {...}} update those commands\' fields, other keys the preset\'s (e.g. "dpo_pairs", "pairing").')

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
        if self.recipe is not None:
            import json

            try:
                if not isinstance(json.loads(self.recipe), dict):
                    raise ValueError("not an object")
            except ValueError as e:
                raise ValueError(f"--recipe {self.recipe!r}: expected a JSON object such as '{{\"rm\": {{\"pooling\": \"mean\"}}}}' ({e})") from None
        if self.stop_after is not None and self.stop_after not in DEMO_STAGES:
            raise ValueError(f"--stop_after {self.stop_after!r}: choose one of {DEMO_STAGES}")
