"""Configs of the scorer commands: `rdo train-rm`, `rdo train-diff`, `rdo score`."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import TrainingArguments

from rdo.config.options import (
    AttentionOptions, BatchLayoutOptions, CoefficientOptions, DatasetOptions, DtypeOptions, EvalDatasetOptions,
    LoraOptions, ModelLoadOptions, RANK_WITH, RESERVED_SCORE_COLUMNS, ReliabilityArgs, SCORER_TEMPLATES,
    SCORER_POOLINGS, ScorerRunOptions, TrainerDefaults, TruncationOptions, arg,
)


@dataclass
class _ScorerTrainConfig(TrainerDefaults, TruncationOptions, LoraOptions, ModelLoadOptions, DtypeOptions, EvalDatasetOptions, DatasetOptions, ReliabilityArgs, TrainingArguments):
    """Fields shared by `rdo train-rm` and `rdo train-diff` (not a command itself). Ranked rows are expanded into pairs."""

    model_name_or_path: str | None = arg(None, "Base causal LM for the scorer: a local folder or a hub id. A new 1-output head is added.", content="model", revision="model_revision")
    head_learning_rate: float = arg(1e-4, "Learning rate of the new score head (the paper: 1e-4; --learning_rate is the backbone's, 1e-5).")
    freeze_backbone: bool = arg(False, "Train only the new score head on the frozen backbone (a linear probe: no backward through the LM).")
    cache_frozen: bool = arg(False, "With --freeze_backbone / --train_top_layers: compute the frozen layers' output once per sequence and replay it every epoch, so an epoch costs the trained layers only (memory: tokens x hidden size x 4 bytes).")
    train_top_layers: int = arg(0, "Train only the head and the top N transformer layers (and the final norm); the embeddings and lower layers stay frozen, so the backward pass stops at layer L-N. 0: train every layer.")
    backbone_layers: int = arg(0, "Keep only the first N transformer layers of the base model under the head (the layers above are dropped, so every forward costs N layers; the saved scorer is an N-layer model). Lower layers can carry surface features, such as word sentiment, better than the last. 0: every layer.")
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
        if self.backbone_layers < 0:
            raise ValueError(f"--backbone_layers {self.backbone_layers} must be >= 0 (0: every layer)")
        if self.train_top_layers and self.backbone_layers and self.train_top_layers > self.backbone_layers:
            raise ValueError(f"--train_top_layers {self.train_top_layers} > --backbone_layers {self.backbone_layers}: the top layers are counted among the kept ones")
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
class TrainRMConfig(BatchLayoutOptions, _ScorerTrainConfig):
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
class ScoreConfig(ScorerRunOptions, AttentionOptions, DtypeOptions, DatasetOptions, CoefficientOptions):
    """`rdo score`: add the reward difference R (and pointwise scores) to every row of a preference dataset.

    Cross-fitting (--folds K) trains K scorers with the recipe of --scorer, each on K-1 folds, and scores
    every fold with the one scorer that never saw it (rdo.score.crossfit). Cost: K trainings on (K-1)/K of the
    data each, about (K-1)x the training compute of one scorer (4x for K=5), plus the usual single scoring pass.
    """

    output: str | None = arg(None, "Output .jsonl (or .parquet): the input rows unchanged plus rdo_reward_diff (and rdo_score_* for reward models).", content="output")
    symmetrize: bool = arg(True, "Difference model: R = (f(x,y_w,y_l) - f(x,y_l,y_w)) / 2 (two passes). --no-symmetrize: the paper's single pass f(x,y_w,y_l).")
    rank_with: str = arg("data", "Ranked rows: keep the data's `scores` (data), or re-rank responses with the scorer (reward, or difference = the paper's 'RRHF (diff)'); the old scores are kept as scores_original.", choices=list(RANK_WITH))
    shard_size: int = arg(1024, "Rows per shard written to <output>.shards/; a killed run resumes from its complete shards (with any shard size).")
    dup_check_rows: int = arg(256, "Difference model: also score f(x, y, y) on this many rows to report the mean |f(x,y,y)| residual (0: skip).")
    folds: int = arg(1, "Cross-fitting: K > 1 trains K scorers with --scorer's recipe (about (K-1)x one training) so no row is scored in-sample.")
    seed: int = arg(0, "Cross-fitting: seed of the fold split (fold k trains with the recipe's seed + k).")
    overwrite: bool = arg(False, "Discard shards of an earlier, different run instead of refusing to mix them.")
    keep_shards: bool = arg(False, "Keep <output>.shards/ after the output is complete.")
    weight_column: str | None = arg(None, "Also write each pair's final training weight (R^α after the R <= 0 policy and normalisation, as `rdo align` computes it with the same --alpha / --coef_* options; 0 = dropped) to this column, for training elsewhere. Ranked rows get a K x K list.")
    prefix_sharing: bool = arg(True, "Reward models: score a row's responses in one [prompt | y_1 | ... | y_K] sequence, the prompt computed once (exact; checked once against padded rows, else one warning and padded rows). --no-prefix-sharing: one sequence per response.")

    def __post_init__(self):
        if self.weight_column is None:
            defaults = CoefficientOptions()
            changed = [f"--{n}" for n in ("alpha", "coef_nonpositive", "coef_floor", "coef_normalize") if getattr(self, n) != getattr(defaults, n)]
            if changed:
                raise ValueError(f"{', '.join(changed)} set the weights that --weight_column writes: add --weight_column NAME, or drop them")
        elif self.weight_column in RESERVED_SCORE_COLUMNS:
            raise ValueError(f"--weight_column {self.weight_column!r} is a column `rdo score` already writes; choose another name, e.g. rdo_weight")
        else:
            self.policy  # validates alpha / coef_* now, with their messages
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
