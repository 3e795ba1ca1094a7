"""Configs of the evaluation commands: `rdo eval accuracy | judge | reward | human`, `rdo generate`."""

from __future__ import annotations

from dataclasses import dataclass

from rdo.config.options import (
    AttentionOptions, DatasetOptions, DtypeOptions, ModelLoadOptions, ScorerRunOptions, arg,
)


@dataclass
class EvalAccuracyConfig(ScorerRunOptions, AttentionOptions, DtypeOptions, DatasetOptions):
    """`rdo eval accuracy`: pairwise accuracy of a reward or difference model on held-out preference data."""

    dataset_split: str = arg("test", "Split to read from a dataset folder or hub id.")
    output: str | None = arg(None, "Write the metrics JSON here (default: print it after the table).", content="output")
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

    generations_a: str | None = arg(None, "Generations JSONL of system A (written by `rdo generate`); win = A better.", content="file")
    generations_b: str | None = arg(None, "Generations JSONL of system B, generated from the same prompts.", content="file")
    output: str | None = arg(None, "Write judge.json here; per-example verdicts go to <stem>.examples.jsonl beside it.", content="output")
    judge_base_url: list[str] = arg([], "OpenAI-compatible base URL(s), e.g. https://api.openai.com/v1 (POST <url>/chat/completions).")
    judge_model: list[str] = arg([], "Judge model name(s), one per --judge_base_url, in the same order.")
    judge_api_key_env: list[str] = arg([], "Name(s) of environment variables holding each judge's API key (one for all, or one per URL; '-' = no key). The key is never written anywhere.")
    judge_local: list[str] = arg([], "Local transformers chat model folder(s) used as additional offline judges (greedy).", content="model")
    judge_template: str | None = arg(None, "Judge prompt file with {question}, {response_1} and {response_2} (default: the packaged judge_template.txt).", content="file")
    num_samples: int = arg(300, "Judge a fixed random sample of this many matched examples (all when fewer).")
    seed: int = arg(0, "Seed for the sample and the bootstrap.")
    cache_dir: str | None = arg(None, "Where every judge reply is cached, keyed by judge, prompt and decoding (default: $RDO_CACHE/judge, else ~/.cache/rdo/judge).", content="output")
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

    generations_a: str | None = arg(None, "Generations JSONL of system A (written by `rdo generate`).", content="file")
    generations_b: str | None = arg(None, "Generations JSONL of system B, generated from the same prompts.", content="file")
    output_dir: str | None = arg(None, "Folder to send to annotators: sheet.csv and sheet.html (no hint of which system is which).", content="output")
    key: str | None = arg(None, "Where the hidden key goes (default: <output_dir>.key.json, beside the folder, not in it).", content="output")
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

    sheets: list[str] = arg([], "Filled sheets: sheet.csv with the choice column filled, or the CSV the HTML page downloads (one per annotator).", content="file")
    key: str | None = arg(None, "The key written by `rdo eval human export`.", content="file")
    output: str | None = arg(None, "Write the tally JSON here (default: only print the table).", content="output")
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

    model_name_or_path: str | None = arg(None, "Causal LM: a local folder, a hub id, or a LoRA adapter folder (its adapter_config.json names the base).", content="model", revision="model_revision")
    base_model_name_or_path: str | None = arg(None, "Base model for a LoRA adapter folder, overriding the one its adapter_config.json names.", content="model")
    dataset_name: str | None = arg(None, "Prompts: any preference/ranked/unpaired data or a file with just `prompt` (file, save_to_disk folder or hub id).", content="dataset")
    dataset_split: str = arg("test", "Split to read from a dataset folder or hub id.")
    output: str | None = arg(None, "Output .jsonl: one row per (prompt, sample).", content="output")
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

    generations: list[str] = arg([], "Generations files written by `rdo generate` (one or more).", nargs="+", content="file")
    scorer: list[str] = arg([], "Reward model folders: `rdo train-rm` outputs or any AutoModelForSequenceClassification folder.", nargs="*", content="model")
    reward_fn: list[str] = arg([], "Python reward functions as module:function, each called as f(prompt: str, response: str) -> float.", nargs="*", content="module")
    output: str | None = arg(None, "Write reward.json here.", content="output")
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
