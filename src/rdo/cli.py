"""`rdo <command>`: flags or a YAML file -> the command's config dataclass -> the command. Nothing more."""

from __future__ import annotations

import os
import sys
from dataclasses import fields

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


def _load(command: str):
    import importlib

    module, cfg_name, fn_name, _ = COMMANDS[command]
    config_module = importlib.import_module("rdo.config")
    return getattr(config_module, cfg_name), getattr(importlib.import_module(module), fn_name)


def parse_config(config_cls, argv: list[str], prog: str):
    """Build `config_cls` from `--config file.yaml` (optional) overridden by command-line flags.

    The YAML values become the parser's defaults (argparse's own mechanism), so any flag given on the
    command line wins, and values go through the same type conversion as flags. HfArgumentParser's
    `parse_yaml_file` cannot be used alone: it builds the dataclass from the file without any flags.
    """
    parser = build_parser(config_cls, prog)
    path = _config_path(argv)
    if path is not None:
        values = read_yaml_options(config_cls, path, parser)
        parser.set_defaults(**values)
        for action in parser._actions:  # required fields given in the file must not still be demanded as flags
            if action.dest in values:
                action.required = False
    _, rest = parser.parse_known_args(argv)  # before building the config, whose checks would speak first
    rest = [a for a in rest if a]
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    # returns the dataclass, then a namespace holding --config
    cfg, _ = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return cfg


def build_parser(config_cls, prog: str):
    """The command's parser: one flag per field, its help the field's one line, plus --config."""
    from transformers import HfArgumentParser

    # no abbreviations: `--conf x` or `--lr 1` must not silently mean another flag
    parser = HfArgumentParser(config_cls, prog=prog, description=config_cls.__doc__, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="YAML file with any of these options; flags override it.")
    for action in parser._actions:  # argparse %-formats help strings: a literal "95%" must not break --help
        if action.help:
            action.help = action.help.replace("%", "%%")
    return parser


def _config_path(argv: list[str]) -> str | None:
    """The --config value, written `--config f.yaml` or `--config=f.yaml` (argparse parses both)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    return known.config


def read_yaml_options(config_cls, path: str, parser) -> dict:
    """The options in a YAML file, each one a field of `config_cls`; anything else is a one-line error."""
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except OSError as e:
        parser.error(f"--config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        parser.error(f"--config {path}: not valid YAML ({' '.join(str(e).split())})")
    values = {} if values is None else values
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of option: value, got {type(values).__name__}")
    known = {f.name for f in fields(config_cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"{path}: unknown option(s) {', '.join(map(str, unknown))} (see {parser.prog} --help)")
    for action in parser._actions:  # argparse checks choices of flags only, not of defaults
        if action.choices and action.dest in values and values[action.dest] not in action.choices:
            parser.error(f"{path}: {action.dest}: {values[action.dest]!r} is not one of {', '.join(map(str, action.choices))}")
    return values


def _usage(prefix: str = "") -> None:
    print("usage: rdo <command> [options]   (rdo <command> --help for its options)\n\ncommands:")
    for name, (*_, desc) in COMMANDS.items():
        if name.startswith(prefix):
            print(f"  {name:18s} {desc}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _usage()
        return 0
    # the longest leading words that name a command: "eval human export", "eval accuracy", "align"
    words = next((k for k in (3, 2, 1) if " ".join(argv[:k]) in COMMANDS), 1)
    command, rest = " ".join(argv[:words]), argv[words:]
    if command not in COMMANDS:
        # a command family such as "eval" or "eval human": list its subcommands
        lead: list[str] = []
        for word in argv[:2]:
            if not any(name.startswith(" ".join(lead + [word]) + " ") for name in COMMANDS):
                break
            lead.append(word)
        prefix = " ".join(lead) + " " if lead else ""
        if not lead:
            print(f"rdo: unknown command {argv[0]!r}", file=sys.stderr)
        _usage(prefix)
        asked = argv[len(lead):len(lead) + 1] in (["-h"], ["--help"])
        return 0 if lead and asked else 2
    config_cls, fn = _load(command)
    from rdo.utils.distributed import check_launch

    try:
        check_launch(command)  # under torchrun: a one-process command is refused before it runs N times
    except ValueError as e:
        print(f"rdo {command}: error: {e}", file=sys.stderr)
        return 2
    if command in POSITIONAL and rest and not rest[0].startswith("-"):
        rest = [f"--{POSITIONAL[command]}", rest[0], *rest[1:]]
    try:
        cfg = parse_config(config_cls, rest, prog=f"rdo {command}")
        fn(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad settings or bad data: the message names what to fix
        if os.environ.get("RDO_DEBUG"):
            raise
        print(f"rdo {command}: error: {e}\n(set RDO_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
