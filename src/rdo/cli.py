"""`rdo <command>`: flags or a YAML file -> the command's config dataclass -> the command. Nothing more."""

from __future__ import annotations

import os
import sys
from dataclasses import fields

COMMANDS = {
    # name: (module, config class, function, one-line description)
    "align": ("rdo.align", "AlignConfig", "align", "Train a policy with DPO/IPO/... weighted by reward difference coefficients."),
    "train-rm": ("rdo.train_scorers", "TrainRMConfig", "train_rm", "Train a pointwise Bradley-Terry reward model on any causal LM."),
    "train-diff": ("rdo.train_scorers", "TrainDiffConfig", "train_diff", "Train a reward difference model R(x, y1, y2) (paper Eqs. 4-6)."),
    "score": ("rdo.scoring", "ScoreConfig", "score", "Add reward differences (coefficients) to a preference dataset; resumable, cross-fitting."),
    "eval accuracy": ("rdo.evaluate.accuracy", "EvalAccuracyConfig", "eval_accuracy", "Pairwise accuracy of a scorer, with bootstrap CI and confidence bins."),
    "eval judge": ("rdo.evaluate.judge", "EvalJudgeConfig", "eval_judge", "Pairwise LLM-as-judge of two generations files: both orders, several judges, cached and retried calls."),
    "eval human export": ("rdo.evaluate.human", "HumanExportConfig", "human_export", "Write a blind, shuffled A/B sheet (CSV + HTML page) for annotators and its hidden key."),
    "eval human tally": ("rdo.evaluate.human", "HumanTallyConfig", "human_tally", "Tally annotators' sheets with the key: win/tie/loss per annotator and by majority, Fleiss' kappa."),
    "generate": ("rdo.generate", "GenerateConfig", "generate_command", "Responses of a model to a data file's prompts (greedy/beam/sampling); resumable, multi-process."),
    "eval reward": ("rdo.evaluate.reward", "EvalRewardConfig", "eval_reward", "Mean reward of generations files under reward models or functions, paired comparisons."),
}


def _load(command: str):
    import importlib

    module, cfg_name, fn_name, _ = COMMANDS[command]
    config_module = importlib.import_module("rdo.config")
    return getattr(config_module, cfg_name), getattr(importlib.import_module(module), fn_name)


def parse_config(config_cls, argv: list[str], prog: str):
    """Build `config_cls` from `--config file.yaml` (optional) overridden by command-line flags."""
    import yaml
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_cls, prog=prog, description=config_cls.__doc__)
    parser.add_argument("--config", default=None, help="YAML file with any of these options; flags override it.")
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        known = {f.name for f in fields(config_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"{path}: unknown option(s) {unknown}")
        parser.set_defaults(**values)
        # required fields given in YAML must not still be demanded on the command line
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    # returns the dataclass, a namespace holding --config, then any unknown strings
    cfg, *_, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    rest = [a for a in rest if a]
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return cfg


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
