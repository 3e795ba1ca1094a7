"""Configs of `rdo prepare`, `rdo run`, `rdo report` and `rdo demo`."""

from __future__ import annotations

from dataclasses import dataclass

from rdo.config.options import arg


# --- pipeline and report ------------------------------------------------------------------------

ADAPTERS = ("none", "tldr")  # see rdo.pipeline.prepare


@dataclass
class PrepareConfig:
    """`rdo prepare`: copy a dataset (a file, a save_to_disk folder or a hub id) into one JSONL the other commands read, optionally converting its format."""

    dataset_name: str | None = arg(None, "Data to prepare: a .jsonl/.json/.parquet/.csv file, a save_to_disk folder or a hub id.", content="dataset")
    output: str | None = arg(None, "Output .jsonl: the rows as read (or as the adapter converts them), in input order.", content="output")
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

    pipeline: str | None = arg(None, "Pipeline YAML file (also accepted as the first argument); see README 'rdo run'.", content="file")
    run_dir: str | None = arg(None, "Override the pipeline's run_dir (where every stage's folder goes).", content="output")
    dry_run: bool = arg(False, "Validate every stage's config, the stage graph and the data formats (first rows) without training.")
    only: str | None = arg(None, "Run only this stage: redone (resumed if it was interrupted); its inputs must already be there.")
    from_stage: str | None = arg(None, "Redo this stage, then run those after it (skipping the unchanged); those before are reused as they are.", aliases=["--from"])
    dataset_override: list[str] = arg([], "SOURCE=FILE pairs: read FILE wherever the pipeline names the dataset SOURCE (a local copy of a hub dataset, or a fixture).", content="file")
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

    # a run folder is keyed by what its stages wrote (each stage by its own key), not by its changing bookkeeping
    run_dir: str | None = arg(None, "Run folder written by `rdo run` (also accepted as the first argument).", content="output")
    output_dir: str | None = arg(None, "Where report.html, report.md and the PNGs go (default: RUN_DIR/report).", content="output")
    title: str | None = arg(None, "Page title (default: `rdo run` and the pipeline file's name that stages.json records, else the run folder's name).")

    def __post_init__(self):
        if not self.run_dir:
            raise ValueError("name the run folder: rdo report RUN_DIR")


# --- demo ---------------------------------------------------------------------------------------

DEMO_PRESETS = ("smollm2", "tiny")
DEMO_STAGES = ("data", "train-rm", "train-diff", "score", "align", "generate", "gold")


@dataclass
class DemoConfig:
    """`rdo demo`: the whole RDO pipeline on SmolLM2-135M-Instruct (offline, CPU), ending in a table with intervals."""

    preset: str = arg("smollm2", "smollm2: the real model, about 9 min on 2 cores (measured on a Xeon with bf16); tiny: a locally built 2-layer model on fewer prompts (a smoke run in seconds).", choices=list(DEMO_PRESETS))
    output_dir: str = arg("runs/demo", "Run folder: data, scorers, policies, generations, report.json and table.md.", content="output")
    seed: int = arg(0, "Seed of the label draw and of every training (same seed, same table).")
    label_noise: float = arg(0.3, "Bradley-Terry temperature tau of the labels: P(a preferred) = sigmoid((gold_a - gold_b) / tau); 0 = noise-free.")
    alpha: float = arg(0.5, "α of the two DPO+rc runs (weight = R^α).")
    folds: int = arg(1, "Cross-fitting for `rdo score`: K > 1 scores every training pair with scorers that never saw it.")
    candidates: str | None = arg(None, "Candidates file (default: the shipped src/rdo/demo/data/candidates.jsonl).", content="file")
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
