"""The commands a user runs: name -> (module, config class, function, one line). Read by `rdo.cli` and by
`rdo run`, which runs each stage through the same table."""

COMMANDS = {
    # name: (module, config class, function, one-line description)
    "align": ("rdo.train.align", "AlignConfig", "align", "Train a policy with DPO/IPO/... weighted by reward difference coefficients."),
    "train-rm": ("rdo.score.training", "TrainRMConfig", "train_rm", "Train a pointwise Bradley-Terry reward model on any causal LM."),
    "train-diff": ("rdo.score.training", "TrainDiffConfig", "train_diff", "Train a reward difference model R(x, y1, y2) (paper Eqs. 4-6)."),
    "score": ("rdo.score.scoring", "ScoreConfig", "score", "Add reward differences (coefficients) to a preference dataset; resumable, cross-fitting."),
    "eval accuracy": ("rdo.evaluate.accuracy", "EvalAccuracyConfig", "eval_accuracy", "Pairwise accuracy of a scorer, with bootstrap CI and confidence bins."),
    "eval judge": ("rdo.evaluate.judge", "EvalJudgeConfig", "eval_judge", "Pairwise LLM-as-judge of two generations files: both orders, several judges, cached and retried calls."),
    "eval human export": ("rdo.evaluate.human", "HumanExportConfig", "human_export", "Write a blind, shuffled A/B sheet (CSV + HTML page) for annotators and its hidden key."),
    "eval human tally": ("rdo.evaluate.human", "HumanTallyConfig", "human_tally", "Tally annotators' sheets with the key: win/tie/loss per annotator and by majority, Fleiss' kappa."),
    "generate": ("rdo.evaluate.generate", "GenerateConfig", "generate_command", "Responses of a model to a data file's prompts (greedy/beam/sampling); resumable, multi-process."),
    "eval reward": ("rdo.evaluate.reward", "EvalRewardConfig", "eval_reward", "Mean reward of generations files under reward models or functions, paired comparisons."),
    "prepare": ("rdo.pipeline.prepare", "PrepareConfig", "prepare", "Copy (and convert) a dataset into the JSONL the other commands read."),
    "run": ("rdo.pipeline.run", "RunConfig", "run", "Run a pipeline YAML (scorers, score, align sweep, generate, evaluate, report); reruns redo only what changed."),
    "report": ("rdo.pipeline.report", "ReportConfig", "report", "HTML + Markdown report with plots over a run folder."),
    "demo": ("rdo.demo", "DemoConfig", "demo", "The whole RDO pipeline on SmolLM2-135M-Instruct, offline, ending in a table with intervals."),
}

# A command's first bare argument fills this field (`rdo run PIPELINE.yaml`, `rdo report RUN_DIR`).
POSITIONAL = {"run": "pipeline", "report": "run_dir"}


def load(command: str):
    """(config class, function) of an rdo command, or a ValueError saying it is not available."""
    import importlib

    if command not in COMMANDS:
        raise ValueError(f"command `rdo {command}` is not available in this install of rdo")
    module, cfg_name, fn_name, _ = COMMANDS[command]
    try:
        cls = getattr(importlib.import_module("rdo.config"), cfg_name)
        fn = getattr(importlib.import_module(module), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"command `rdo {command}` is not available in this install of rdo ({e})") from None
    return cls, fn
